"""Exports the JSON Schema of the envelope, the events, the board update and the access record.

`python -m schemas.export` rewrites the folder; `python -m schemas.export --check`
exits 1 when it is stale, so CI catches a model changed without its published schema.

Each file is a JSON Schema 2020-12 document (`$schema`) whose `$id` is its own file name
under SCHEMA_BASE_URI: `<type>.v<schema_version>.json` for an event's payload (a new
version is a new file and a new id; a published one never changes meaning), and
`Envelope.json`, `BoardUpdate.json`, `AccessRecorded.json` and `AccessRecords.json` (a
pack of them) for the messages around them.
The id names the schema; nothing is served there: the files are in schemas/json/.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from schemas.audit import AccessRecorded, AccessRecords
from schemas.board import BoardUpdate
from schemas.envelope import Envelope
from schemas.registry import REGISTRY, Registry

JSON_DIR = Path(__file__).parent / "json"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_BASE_URI = "https://carecoord.example/schemas/"


def event_schema_file(event_type: str, schema_version: int) -> str:
    """The file (and the last part of the `$id`) of an event type's payload schema."""
    return f"{event_type}.v{schema_version}.json"


def render_all(registry: Registry = REGISTRY) -> dict[str, str]:
    """Filename -> file text for the envelope and every registered event model."""
    files = {
        name: _render(name, model.model_json_schema())
        for name, model in (
            ("Envelope.json", Envelope),
            ("BoardUpdate.json", BoardUpdate),
            ("AccessRecorded.json", AccessRecorded),
            ("AccessRecords.json", AccessRecords),
        )
    }
    for model in registry.all_models():
        schema = model.model_json_schema()
        # The type and version live on the class, not in the fields; publish them too.
        schema["x-event-type"] = model.event_type
        schema["x-schema-version"] = model.schema_version
        name = event_schema_file(model.event_type, model.schema_version)
        files[name] = _render(name, schema)
    return files


def check(directory: Path = JSON_DIR) -> list[str]:
    """Problems that make `directory` differ from `render_all()`; empty when fresh."""
    expected = render_all()
    problems = []
    for name, text in sorted(expected.items()):
        path = directory / name
        if not path.is_file():
            problems.append(f"missing: {name}")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"stale: {name}")
    for name in sorted(_existing(directory) - expected.keys()):
        problems.append(f"extra: {name}")
    return problems


def write(directory: Path = JSON_DIR) -> list[str]:
    """Write every schema file and delete ones no model produces; returns what changed."""
    expected = render_all()
    directory.mkdir(parents=True, exist_ok=True)
    changed = []
    for name, text in sorted(expected.items()):
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(f"wrote: {name}")
    for name in sorted(_existing(directory) - expected.keys()):
        (directory / name).unlink()
        changed.append(f"removed: {name}")
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schemas.export", description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if schemas/json is not up to date"
    )
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("run: python -m schemas.export", file=sys.stderr)
            return 1
        return 0
    for change in write():
        print(change)
    return 0


def _render(name: str, schema: dict[str, Any]) -> str:
    schema = {"$schema": JSON_SCHEMA_DIALECT, "$id": SCHEMA_BASE_URI + name, **schema}
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def _existing(directory: Path) -> set[str]:
    if not directory.is_dir():
        return set()
    return {path.name for path in directory.glob("*.json")}


if __name__ == "__main__":
    raise SystemExit(main())
