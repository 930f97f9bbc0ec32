"""The exported JSON Schema files in schemas/json match the models they describe."""

from __future__ import annotations

import json

from schemas.export import JSON_DIR, check, render_all


def test_every_exported_schema_file_matches_its_model() -> None:
    for name, text in render_all().items():
        path = JSON_DIR / name
        assert path.is_file(), f"{name} is missing: run python -m schemas.export"
        assert path.read_text(encoding="utf-8") == text, (
            f"{name} is stale: run python -m schemas.export"
        )


def test_the_schema_folder_holds_no_file_that_no_model_produces() -> None:
    extra = {path.name for path in JSON_DIR.glob("*.json")} - render_all().keys()
    assert extra == set(), f"remove {sorted(extra)}: run python -m schemas.export"


def test_the_export_check_finds_nothing_to_do() -> None:
    assert check() == []


def test_every_rendered_file_is_sorted_indented_and_ends_with_a_newline() -> None:
    for name, text in render_all().items():
        assert text.endswith("}\n"), name
        assert text.startswith('{\n  "'), name


def test_every_file_names_its_dialect_and_a_stable_id_of_its_own_name() -> None:
    ids = set()
    for name, text in render_all().items():
        schema = json.loads(text)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema", name
        assert schema["$id"] == f"https://carecoord.example/schemas/{name}", name
        ids.add(schema["$id"])
    assert len(ids) == len(render_all())
