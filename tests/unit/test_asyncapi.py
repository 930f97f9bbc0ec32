"""docs/asyncapi.yaml: the four topics as a downstream consumer reads them, generated from
the registry and checked for drift."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from schemas import asyncapi
from schemas.export import JSON_DIR, SCHEMA_BASE_URI, event_schema_file
from schemas.registry import REGISTRY
from services.common import kafka, pipeline_mac, projection
from services.settings import Settings


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    loaded = yaml.safe_load(asyncapi.DOCUMENT.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def test_the_document_is_asyncapi_3_of_the_four_topics(document: dict[str, Any]) -> None:
    settings = Settings()

    assert document["asyncapi"] == "3.0.0"
    assert {c["address"] for c in document["channels"].values()} == set(settings.all_topics)
    for operation in document["operations"].values():
        assert operation["action"] == "receive"


def test_every_registered_event_type_and_version_is_a_message_of_care_events(
    document: dict[str, Any],
) -> None:
    [events] = [c for c in document["channels"].values() if c["address"] == "care.events"]
    messages = document["components"]["messages"]

    for model in REGISTRY.all_models():
        name = f"{model.event_type}.v{model.schema_version}"
        assert name in events["messages"], name
        message = messages[name]
        payload = message["payload"]["schema"]["allOf"][1]["properties"]
        assert payload["type"] == {"const": model.event_type}
        assert payload["schema_version"] == {"const": model.schema_version}
        schema_file = event_schema_file(model.event_type, model.schema_version)
        assert payload["payload"] == {"$ref": f"../schemas/json/{schema_file}"}
        assert message["x-schema-id"] == SCHEMA_BASE_URI + schema_file


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [
            r for v in node.values() for r in _refs(v)
        ]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_every_reference_in_the_document_resolves(document: dict[str, Any]) -> None:
    refs = _refs(document)

    assert refs
    for ref in refs:
        if ref.startswith("#/"):
            node: Any = document
            for part in ref[2:].split("/"):
                node = node[part.replace("~1", "/").replace("~0", "~")]
        else:
            target = (asyncapi.DOCUMENT.parent / ref).resolve()
            assert target.parent == JSON_DIR.resolve(), ref
            assert json.loads(target.read_text())["$id"] == SCHEMA_BASE_URI + target.name


def test_the_header_and_topic_names_are_the_services_own() -> None:
    settings = Settings()

    assert asyncapi.POSITION_HEADER == kafka.POSITION_HEADER
    assert asyncapi.TYPE_HEADER == kafka.TYPE_HEADER
    assert asyncapi.MAC_KEY_ID_HEADER == pipeline_mac.KEY_ID_HEADER
    assert asyncapi.MAC_HEADER == pipeline_mac.MAC_HEADER
    assert asyncapi.ERROR_HEADER == projection.ERROR_HEADER
    assert asyncapi.SOURCE_HEADER == projection.SOURCE_HEADER
    assert settings.events_topic == asyncapi.EVENTS_TOPIC
    assert settings.dlq_topic == asyncapi.DLQ_TOPIC
    assert settings.board_updates_topic == asyncapi.BOARD_UPDATES_TOPIC
    assert settings.audit_topic == asyncapi.AUDIT_TOPIC


def test_the_signed_topics_and_the_dead_letters_name_their_headers(
    document: dict[str, Any],
) -> None:
    schemas = document["components"]["schemas"]

    assert schemas["EventHeaders"]["required"] == ["carecoord-position", "carecoord-type"]
    assert schemas["SignedHeaders"]["required"] == ["carecoord-mac", "carecoord-mac-key"]
    assert schemas["DeadLetterHeaders"]["required"] == ["carecoord-error", "carecoord-source"]


def test_the_check_passes_on_the_committed_document_and_finds_drift(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "asyncapi.yaml"
    copy.write_text(asyncapi.render(), encoding="utf-8")

    assert asyncapi.main(["--check"]) == 0
    assert asyncapi.main(["--check", "--output", str(copy)]) == 0
    copy.write_text(asyncapi.render().replace("TaskMoved.v1", "TaskMoved.v0"), encoding="utf-8")
    assert asyncapi.main(["--check", "--output", str(copy)]) == 1
    assert "stale: asyncapi.yaml" in capsys.readouterr().err
    copy.unlink()
    assert asyncapi.main(["--check", "--output", str(copy)]) == 1
    assert asyncapi.main(["--output", str(copy)]) == 0
    assert copy.read_text(encoding="utf-8") == asyncapi.render()


def test_the_mac_as_the_document_describes_it_is_the_services_own() -> None:
    secret = bytes(range(32))
    keys = pipeline_mac.PipelineKeys(keys={"k1": secret}, current="k1")
    topic, key, value = "p.care.audit", b"patient-1", b'{"record_id": "r-1"}'

    described = hmac.new(secret, b"carecoord-pipeline-mac-v1", hashlib.sha256)
    for part in (topic.encode(), key, value):
        described.update(b"\x01" + len(part).to_bytes(8, "big") + part)
    no_key = hmac.new(secret, b"carecoord-pipeline-mac-v1", hashlib.sha256)
    no_key.update(b"\x01" + len(topic).to_bytes(8, "big") + topic.encode() + b"\x00")
    no_key.update(b"\x01" + len(value).to_bytes(8, "big") + value)

    assert keys.sign(topic, key, value) == [
        ("carecoord-mac-key", b"k1"),
        ("carecoord-mac", described.digest()),
    ]
    assert keys.sign(topic, None, value)[1] == ("carecoord-mac", no_key.digest())
    assert (
        "`carecoord-pipeline-mac-v1`"
        in asyncapi.build()["components"]["schemas"]["SignedHeaders"]["description"]
    )
