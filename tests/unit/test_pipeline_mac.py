"""The pipeline MAC: only a holder of a listed key can produce a message that verifies."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from services.common import pipeline_mac
from services.common.dev_secrets import pipeline_keys
from services.common.pipeline_mac import BadPipelineKeys, Refused
from services.settings import Settings

TOPIC = "care.audit"


def spec(key_id: str) -> str:
    return pipeline_mac.new_key_spec(key_id)


def test_a_signed_message_verifies() -> None:
    keys = pipeline_mac.parse(spec("k1"))
    headers = keys.sign(TOPIC, b"patient-1", b"value")
    keys.verify(TOPIC, b"patient-1", b"value", headers)


@pytest.mark.parametrize(
    ("topic", "key", "value"),
    [
        ("care.board-updates", b"patient-1", b"value"),  # moved to another topic
        (TOPIC, b"patient-2", b"value"),  # another key
        (TOPIC, None, b"value"),  # no key at all
        (TOPIC, b"patient-1", b"valuf"),  # one byte changed
        (TOPIC, b"patient-1va", b"lue"),  # the same bytes split differently
    ],
)
def test_a_changed_topic_key_or_value_does_not_verify(
    topic: str, key: bytes | None, value: bytes
) -> None:
    keys = pipeline_mac.parse(spec("k1"))
    headers = keys.sign(TOPIC, b"patient-1", b"value")
    with pytest.raises(Refused, match="wrong MAC"):
        keys.verify(topic, key, value, headers)


def test_a_message_without_a_mac_is_refused() -> None:
    keys = pipeline_mac.parse(spec("k1"))
    with pytest.raises(Refused, match="no MAC"):
        keys.verify(TOPIC, b"k", b"v", None)
    with pytest.raises(Refused, match="no MAC"):
        keys.verify(TOPIC, b"k", b"v", [("other", b"x")])


def test_a_message_signed_with_another_key_under_a_listed_id_is_refused() -> None:
    ours, theirs = pipeline_mac.parse(spec("k1")), pipeline_mac.parse(spec("k1"))
    with pytest.raises(Refused, match="wrong MAC"):
        ours.verify(TOPIC, b"k", b"v", theirs.sign(TOPIC, b"k", b"v"))


def test_an_unknown_key_id_is_refused() -> None:
    ours, theirs = pipeline_mac.parse(spec("k1")), pipeline_mac.parse(spec("k9"))
    with pytest.raises(Refused, match="unknown key id"):
        ours.verify(TOPIC, b"k", b"v", theirs.sign(TOPIC, b"k", b"v"))


def test_repeated_mac_headers_are_refused() -> None:
    keys = pipeline_mac.parse(spec("k1"))
    headers = keys.sign(TOPIC, b"k", b"v")
    with pytest.raises(Refused, match="malformed"):
        keys.verify(TOPIC, b"k", b"v", [*headers, headers[1]])


def test_rotation_the_last_key_signs_and_an_old_one_verifies_while_listed() -> None:
    old, new = spec("old"), spec("new")
    signed_before = pipeline_mac.parse(old).sign(TOPIC, b"k", b"v")
    during = pipeline_mac.parse(f"{old}, {new}")
    assert during.current == "new"
    during.verify(TOPIC, b"k", b"v", signed_before)
    signed_during = during.sign(TOPIC, b"k", b"v")
    assert signed_during[0] == (pipeline_mac.KEY_ID_HEADER, b"new")
    after = pipeline_mac.parse(new)
    after.verify(TOPIC, b"k", b"v", signed_during)
    with pytest.raises(Refused, match="unknown key id"):
        after.verify(TOPIC, b"k", b"v", signed_before)


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("", "no keys"),
        ("nocolon", "not 'id:base64key'"),
        ("bad id:" + base64.b64encode(os.urandom(32)).decode(), "not 'id:base64key'"),
        ("k:not base64!", "is not base64"),
        ("k:" + base64.b64encode(os.urandom(16)).decode(), "under 32 bytes"),
    ],
    # Ids without the random keys, so that every test process collects the same tests.
    ids=["empty", "no-colon", "bad-id", "not-base64", "short-key"],
)
def test_unusable_keys_are_refused_without_quoting_them(given: str, says: str) -> None:
    with pytest.raises(BadPipelineKeys, match=says) as info:
        pipeline_mac.parse(given)
    secret = given.partition(":")[2]
    assert not secret or secret not in str(info.value)


def test_a_key_id_listed_twice_is_refused() -> None:
    with pytest.raises(BadPipelineKeys, match="twice"):
        pipeline_mac.parse(f"{spec('a')},{spec('a')}")


def _settings(data_dir: Path, **given: object) -> Settings:
    return Settings(data_dir=data_dir, _env_file=None, **given)  # type: ignore[call-arg]


def test_the_dev_key_file_is_made_only_when_asked_0600_and_reused(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "data")
    with pytest.raises(BadPipelineKeys, match="carecoord up"):
        pipeline_keys(settings)
    made = pipeline_keys(settings, create=True)
    assert made.source.startswith("DEV key file")
    path = tmp_path / "data" / "dev-pipeline-keys"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = pipeline_keys(settings)
    assert again.keys == made.keys
    assert [p.name for p in path.parent.iterdir()] == ["dev-pipeline-keys"]


def test_the_setting_wins_over_the_dev_key_file(tmp_path: Path) -> None:
    pipeline_keys(_settings(tmp_path), create=True)
    configured = pipeline_keys(_settings(tmp_path, pipeline_keys=spec("prod")))
    assert configured.current == "prod"
    assert configured.source == "CARECOORD_PIPELINE_KEYS"
