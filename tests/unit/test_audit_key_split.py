"""Only the audit writer holds the checkpoint signing key: the API reads and verifies the
log with the record keys, the index key and the public key alone, and never reads the
signing key from the environment or from a file."""

from __future__ import annotations

import base64
import dataclasses
import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr
from typer.testing import CliRunner

from services.api import bootstrap
from services.audit import keys
from services.audit.keys import AuditKeys, BadKeys, ReaderKeys
from services.cli.main import app
from services.settings import Settings

ENV_NAMES = (
    "CARECOORD_AUDIT_KEYS",
    "CARECOORD_AUDIT_INDEX_KEY",
    "CARECOORD_AUDIT_SIGNING_KEY",
    "CARECOORD_AUDIT_PUBLIC_KEY",
)


@pytest.fixture(autouse=True)
def _no_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


def settings(data_dir: Path, **given: Any) -> Settings:
    return Settings(data_dir=data_dir, _env_file=None, **given)  # type: ignore[call-arg]


def new_key() -> str:
    return base64.b64encode(secrets.token_bytes(keys.KEY_BYTES)).decode()


def holds_a_private_key(value: object) -> bool:
    return any(
        isinstance(getattr(value, f.name), Ed25519PrivateKey)
        for f in dataclasses.fields(value)  # type: ignore[arg-type]
    )


def test_the_readers_keys_have_no_signing_key_but_verify_what_the_writer_signs(
    tmp_path: Path,
) -> None:
    writer = keys.load(settings(tmp_path), create=True)
    reader = keys.load_reader(settings(tmp_path))

    assert isinstance(reader, ReaderKeys) and not isinstance(reader, AuditKeys)
    assert not hasattr(reader, "signing_key") and not holds_a_private_key(reader)
    assert reader.signing_key_id == writer.signing_key_id
    assert (reader.records, reader.current, reader.index_key) == (
        writer.records,
        writer.current,
        writer.index_key,
    )
    message = b"a checkpoint's signed text"
    reader.verify_key.verify(writer.signing_key.sign(message), message)


def test_the_signing_key_has_a_file_of_its_own_that_the_reader_never_opens(
    tmp_path: Path,
) -> None:
    writer = keys.load(settings(tmp_path), create=True)
    stored = json.loads(keys.key_file(settings(tmp_path)).read_text())
    assert "signing_key" not in stored
    seed_file = keys.signing_key_file(settings(tmp_path))
    assert seed_file.stat().st_mode & 0o777 == 0o600

    seed_file.write_text("not a key at all")  # were it read, loading would fail

    assert keys.load_reader(settings(tmp_path)).signing_key_id == writer.signing_key_id


def test_the_reader_never_reads_the_signing_key_setting(tmp_path: Path) -> None:
    seed = Ed25519PrivateKey.generate()
    given = {
        "audit_keys": SecretStr(f"k1:{new_key()}"),
        "audit_index_key": SecretStr(new_key()),
        "audit_public_key": keys.public_key_pem(seed.public_key()),
        # Not even valid base64: a reader that looked at it would refuse it.
        "audit_signing_key": SecretStr("%%% not base64 %%%"),
    }
    reader = keys.load_reader(settings(tmp_path, **given))

    assert reader.signing_key_id == keys.public_key_id(seed.public_key())
    assert not keys.key_file(settings(tmp_path)).exists()


def test_the_public_key_setting_takes_raw_base64_and_refuses_anything_else(
    tmp_path: Path,
) -> None:
    public = Ed25519PrivateKey.generate().public_key()
    given: dict[str, Any] = {
        "audit_keys": SecretStr(f"k1:{new_key()}"),
        "audit_index_key": SecretStr(new_key()),
    }
    raw = keys.public_key_b64(public)
    assert keys.load_reader(
        settings(tmp_path, audit_public_key=raw, **given)
    ).signing_key_id == keys.public_key_id(public)
    for bad in ("", "abc", new_key()[:20], "-----BEGIN PUBLIC KEY-----\nxx\n"):
        with pytest.raises(BadKeys):
            keys.load_reader(settings(tmp_path, audit_public_key=bad, **given))


def test_a_reader_without_a_public_key_is_refused_naming_the_setting(tmp_path: Path) -> None:
    given = {"audit_keys": SecretStr(f"k1:{new_key()}"), "audit_index_key": SecretStr(new_key())}
    with pytest.raises(BadKeys, match="CARECOORD_AUDIT_PUBLIC_KEY"):
        keys.load_reader(settings(tmp_path, **given))


def test_a_public_key_that_is_not_the_signing_keys_half_is_refused_to_the_writer(
    tmp_path: Path,
) -> None:
    given = {
        "audit_keys": SecretStr(f"k1:{new_key()}"),
        "audit_index_key": SecretStr(new_key()),
        "audit_signing_key": SecretStr(new_key()),
        "audit_public_key": keys.public_key_b64(Ed25519PrivateKey.generate().public_key()),
    }
    with pytest.raises(BadKeys, match="not the public half"):
        keys.load(settings(tmp_path, **given))


def test_a_key_file_of_an_older_version_is_split_by_the_next_start(tmp_path: Path) -> None:
    seed = secrets.token_bytes(keys.KEY_BYTES)
    path = keys.key_file(settings(tmp_path))
    path.write_text(
        json.dumps(
            {
                "records": {"k1": new_key()},
                "current": "k1",
                "index_key": new_key(),
                "signing_key": base64.b64encode(seed).decode(),
            }
        )
    )
    path.chmod(0o600)
    with pytest.raises(BadKeys, match="predates"):
        keys.load_reader(settings(tmp_path))
    # The writer still reads it as it was, until `carecoord up` splits it.
    expected = keys.public_key_id(Ed25519PrivateKey.from_private_bytes(seed).public_key())
    assert keys.load(settings(tmp_path)).signing_key_id == expected

    keys.load(settings(tmp_path), create=True)

    assert "signing_key" not in json.loads(path.read_text())
    assert keys.load_reader(settings(tmp_path)).signing_key_id == expected
    assert keys.load(settings(tmp_path)).signing_key_id == expected


def test_the_api_is_built_with_the_readers_keys_and_no_signing_key(tmp_path: Path) -> None:
    public = Ed25519PrivateKey.generate().public_key()
    api_settings = settings(
        tmp_path,
        audit_keys=SecretStr(f"k1:{new_key()}"),
        audit_index_key=SecretStr(new_key()),
        audit_public_key=keys.public_key_b64(public),
        jwt_secret=SecretStr("unit-test-secret-that-is-long-enough-too"),
    )
    assert api_settings.audit_signing_key is None
    services = bootstrap.build(api_settings, None)  # type: ignore[arg-type]  # not queried

    held = services.keyring.get()
    assert isinstance(services.keyring, keys.ReaderKeyring)
    assert isinstance(held, ReaderKeys) and not holds_a_private_key(held)
    assert held.signing_key_id == keys.public_key_id(public)


def test_the_api_refuses_to_start_with_the_signing_key_in_its_environment() -> None:
    result = CliRunner().invoke(app, ["api"], env={"CARECOORD_AUDIT_SIGNING_KEY": new_key()})

    assert result.exit_code == 2
    assert "only the audit writer" in result.output
    assert "CARECOORD_AUDIT_PUBLIC_KEY" in result.output
