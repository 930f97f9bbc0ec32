"""Generates docs/asyncapi.yaml: an AsyncAPI 3.0 document of the four Kafka topics, for a
consumer outside the project.

`python -m schemas.asyncapi` rewrites the file; `python -m schemas.asyncapi --check` exits 1
when it is stale (`make lint` runs it), so an event type or version added without the
document shows in CI. The messages come from the registry (every event type and version,
each its own message on care.events); the payloads are the exported JSON Schemas
(schemas/json, referenced by file from the document, each with its `$id`).

The header names and the topic names are the services' (services.common.kafka,
pipeline_mac, projection; services.settings). This package may not import the services,
so they are spelled here and a unit test holds the two spellings together.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from schemas.audit import PACKED_MAX
from schemas.export import JSON_DIR, JSON_SCHEMA_DIALECT, SCHEMA_BASE_URI, event_schema_file
from schemas.registry import REGISTRY, Registry

DOCUMENT = Path(__file__).parent.parent / "docs" / "asyncapi.yaml"

EVENTS_TOPIC = "care.events"
DLQ_TOPIC = "care.events.dlq"
BOARD_UPDATES_TOPIC = "care.board-updates"
AUDIT_TOPIC = "care.audit"

POSITION_HEADER = "carecoord-position"
TYPE_HEADER = "carecoord-type"
MAC_KEY_ID_HEADER = "carecoord-mac-key"
MAC_HEADER = "carecoord-mac"
ERROR_HEADER = "carecoord-error"
SOURCE_HEADER = "carecoord-source"

# Kafka bindings (https://github.com/asyncapi/bindings/tree/master/kafka).
_KAFKA_BINDING = "0.5.0"
_SCHEMA_FORMAT = "application/schema+json;version=draft-2020-12"
# From docs/, where the document lives, to the exported schemas.
_SCHEMA_PATH = "../" + JSON_DIR.relative_to(DOCUMENT.parent.parent).as_posix() + "/"

_PREFIX = (
    "Every topic name may carry a prefix (CARECOORD_TOPIC_PREFIX, empty by default), so "
    "several stacks can share one broker: the addresses here are without it."
)
_MAC = (
    f"Signed by the services: `{MAC_KEY_ID_HEADER}` names the pipeline key "
    f"(CARECOORD_PIPELINE_KEYS), `{MAC_HEADER}` is HMAC-SHA256 under that key of "
    "`carecoord-pipeline-mac-v1` followed by the topic's full name (prefix included), the "
    "message key and the value, each as 0x00 when absent, else 0x01, its length as 8 bytes "
    "big-endian, and its bytes. Only the services hold the keys; a consumer given them can "
    "refuse anything else."
)


def _text(description: str, **more: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **more}


def _headers(**headers: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": dict(headers),
        "required": sorted(headers),
    }


def _mac_headers() -> dict[str, dict[str, Any]]:
    return {
        MAC_KEY_ID_HEADER: _text(
            "The id of the pipeline key that signed the message (ASCII).",
            pattern="^[A-Za-z0-9._-]{1,64}$",
        ),
        MAC_HEADER: _text(
            "HMAC-SHA256 (32 raw bytes) over the topic, the key and the value (see SignedHeaders).",
            contentEncoding="binary",
        ),
    }


def _ref(path: str) -> dict[str, str]:
    return {"$ref": path}


def _schema_file(name: str) -> dict[str, Any]:
    return {"schemaFormat": _SCHEMA_FORMAT, "schema": _ref(_SCHEMA_PATH + name)}


def _key(description: str) -> dict[str, Any]:
    return {"kafka": {"key": _text(description), "bindingVersion": _KAFKA_BINDING}}


def _event_message(model: Any) -> dict[str, Any]:
    name = event_schema_file(model.event_type, model.schema_version)
    doc = (model.__doc__ or "").strip()
    return {
        "name": model.event_type,
        "title": f"{model.event_type} v{model.schema_version}",
        "summary": doc.split("\n\n")[0].replace("\n", " ") if doc else model.event_type,
        "contentType": "application/json",
        "headers": _ref("#/components/schemas/EventHeaders"),
        "payload": {
            "schemaFormat": _SCHEMA_FORMAT,
            "schema": {
                "allOf": [
                    _ref(_SCHEMA_PATH + "Envelope.json"),
                    {
                        "type": "object",
                        "properties": {
                            "type": {"const": model.event_type},
                            "schema_version": {"const": model.schema_version},
                            "payload": _ref(_SCHEMA_PATH + name),
                        },
                    },
                ]
            },
        },
        "bindings": _key("The team id (the envelope's team_id): one team's events, in order."),
        "x-schema-id": SCHEMA_BASE_URI + name,
    }


def build(registry: Registry = REGISTRY) -> dict[str, Any]:
    """The AsyncAPI document as a mapping, in the order it is written."""
    models = sorted(registry.all_models(), key=lambda m: (m.event_type, m.schema_version))
    events = {f"{m.event_type}.v{m.schema_version}": _event_message(m) for m in models}
    messages: dict[str, Any] = {
        **events,
        "BoardUpdate": {
            "name": "BoardUpdate",
            "title": "Board update",
            "summary": "One change a team's board subscribers hear of.",
            "contentType": "application/json",
            "headers": _ref("#/components/schemas/SignedHeaders"),
            "payload": _schema_file("BoardUpdate.json"),
            "bindings": _key("The team id."),
            "x-schema-id": SCHEMA_BASE_URI + "BoardUpdate.json",
        },
        "AccessRecorded": {
            "name": "AccessRecorded",
            "title": "Access record",
            "summary": "One operation's access to one patient's data (ids only, no PHI).",
            "description": (
                "Redelivered at least once: `record_id` is unique per record, so a consumer "
                "drops a repeat by it. `schema_version` is in the value (a version 1 record "
                "reads as version 2)."
            ),
            "contentType": "application/json",
            "headers": _ref("#/components/schemas/SignedHeaders"),
            "payload": _schema_file("AccessRecorded.json"),
            "bindings": _key(
                "The patient id (one patient's records stay in order on one partition), "
                "or the actor's id for an access that touched no patient."
            ),
            "x-schema-id": SCHEMA_BASE_URI + "AccessRecorded.json",
        },
        "AccessRecords": {
            "name": "AccessRecords",
            "title": "Access records, packed",
            "summary": "Several access records of one key in one message (ids only, no PHI).",
            "description": (
                "The audit relay packs the records of one patient that are due together "
                f"(at most {PACKED_MAX}): a value with a `records` field is a pack, any "
                "other is one AccessRecorded. Each record in it is read, and dropped as a "
                "repeat by its `record_id`, exactly as one sent on its own."
            ),
            "contentType": "application/json",
            "headers": _ref("#/components/schemas/SignedHeaders"),
            "payload": _schema_file("AccessRecords.json"),
            "bindings": _key("The patient id (or the actor's id), as for one record."),
            "x-schema-id": SCHEMA_BASE_URI + "AccessRecords.json",
        },
        "DeadLetter": {
            "name": "DeadLetter",
            "title": "Dead letter",
            "summary": "A message a consumer of the services could not take, kept as it came.",
            "description": (
                "The key and value are the original message's, byte for byte (the value may "
                "be no valid JSON at all: that can be why it is here), with its headers and "
                f"two more: `{ERROR_HEADER}` and `{SOURCE_HEADER}`."
            ),
            "headers": _ref("#/components/schemas/DeadLetterHeaders"),
            "payload": {
                "description": (
                    "The original value: an event envelope, a board update or an access "
                    "record, or bytes that are none of them."
                )
            },
            "bindings": _key("The original message's key."),
        },
    }
    channel_messages = {
        EVENTS_TOPIC: list(events),
        DLQ_TOPIC: ["DeadLetter"],
        BOARD_UPDATES_TOPIC: ["BoardUpdate"],
        AUDIT_TOPIC: ["AccessRecorded", "AccessRecords"],
    }
    channel_ids = {
        EVENTS_TOPIC: "careEvents",
        DLQ_TOPIC: "careEventsDlq",
        BOARD_UPDATES_TOPIC: "careBoardUpdates",
        AUDIT_TOPIC: "careAudit",
    }
    channel_descriptions = {
        EVENTS_TOPIC: (
            "Every event of the event store, published by the relay at least once in the "
            f"store's order. `{POSITION_HEADER}` is the event's position in the store: "
            "gap-free and increasing over all teams, so a consumer keeps the highest it has "
            "applied per team and drops anything at or below it (a redelivery)."
        ),
        DLQ_TOPIC: (
            "Messages of the other topics that the worker or the API could not take "
            "(malformed, unknown type, not signed by the services)."
        ),
        BOARD_UPDATES_TOPIC: (
            "What the board projector publishes for the API's subscribers, at least once. "
            "`seq` increases per team in publishing order: a repeat is dropped by it."
        ),
        AUDIT_TOPIC: (
            "Access records on their way to the audit log, at least once. "
            "The audit writer appends only records signed by the services."
        ),
    }
    channels = {
        channel_ids[topic]: {
            "address": topic,
            "title": topic,
            "description": f"{channel_descriptions[topic]} {_PREFIX}",
            "messages": {m: _ref(f"#/components/messages/{m}") for m in names},
        }
        for topic, names in channel_messages.items()
    }
    operations = {
        f"read{cid[0].upper()}{cid[1:]}": {
            "action": "receive",
            "title": f"Read {topic}",
            "channel": _ref(f"#/channels/{cid}"),
            "messages": [_ref(f"#/channels/{cid}/messages/{m}") for m in channel_messages[topic]],
        }
        for topic, cid in channel_ids.items()
    }
    schemas = {
        "EventHeaders": {
            **_headers(
                **{
                    POSITION_HEADER: _text(
                        "The event's position in the event store, in decimal ASCII (1, 2, ...).",
                        pattern="^[1-9][0-9]*$",
                    ),
                    TYPE_HEADER: _text(
                        "The event type (the envelope's `type`), so a consumer can skip "
                        "events it does not read without decoding the value."
                    ),
                }
            ),
            "description": "The headers of every care.events message.",
        },
        "SignedHeaders": {**_headers(**_mac_headers()), "description": _MAC},
        "DeadLetterHeaders": {
            "type": "object",
            "description": (
                "The original message's headers (all of them but an earlier "
                f"`{ERROR_HEADER}`), and these two."
            ),
            "properties": {
                ERROR_HEADER: _text(
                    "Why the message was refused (UTF-8, at most 4,000 bytes). It names ids "
                    "and the fault, never the message's content."
                ),
                SOURCE_HEADER: _text(
                    "Where the message was: `<topic>:<partition>:<offset>`.",
                    pattern="^.+:[0-9]+:[0-9]+$",
                ),
            },
            "required": [ERROR_HEADER, SOURCE_HEADER],
        },
    }
    return {
        "asyncapi": "3.0.0",
        "id": "urn:carecoord:topics",
        "info": {
            "title": "carecoord topics",
            "version": "1.0.0",
            "description": (
                "The Kafka topics of carecoord, for consumers outside it. Generated by "
                "`python -m schemas.asyncapi` from the event registry; do not edit. "
                f"Payload schemas are JSON Schema ({JSON_SCHEMA_DIALECT}) in "
                f"schemas/json/, each with the `$id` {SCHEMA_BASE_URI}<file name>; an "
                "event type's payload is `<type>.v<schema_version>.json`, inside the "
                "envelope (`Envelope.json`). See the README, *Reading the topics*."
            ),
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def render(registry: Registry = REGISTRY) -> str:
    text: str = yaml.safe_dump(
        build(registry), sort_keys=False, allow_unicode=True, width=100, default_flow_style=False
    )
    return "# Generated by `python -m schemas.asyncapi`: do not edit.\n" + text


def check(path: Path = DOCUMENT) -> list[str]:
    """What makes `path` differ from `render()`; empty when fresh."""
    if not path.is_file():
        return [f"missing: {path.name}"]
    if path.read_text(encoding="utf-8") != render():
        return [f"stale: {path.name}"]
    return []


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schemas.asyncapi", description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if docs/asyncapi.yaml is not up to date"
    )
    parser.add_argument("--output", type=Path, default=DOCUMENT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.output)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("run: python -m schemas.asyncapi", file=sys.stderr)
            return 1
        return 0
    text = render()
    if not args.output.is_file() or args.output.read_text(encoding="utf-8") != text:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote: {args.output.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
