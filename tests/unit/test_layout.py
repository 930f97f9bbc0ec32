"""The repository's own shape: packages the layer contracts can see, and docs that stay
inside the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "deploy" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# [text](target) links, and paths written in backticks that climb out of a folder.
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_CLIMBING_PATH = re.compile(r"`(\.\./[^`\s]*)`")


def test_every_folder_of_python_code_is_a_package_the_layer_contracts_can_see() -> None:
    # import-linter (and grimp under it) skips a folder without __init__.py: its imports
    # would break no contract, silently.
    missing = [
        str(folder.relative_to(ROOT))
        for top in ("services", "schemas")
        for folder in (ROOT / top).rglob("*")
        if folder.is_dir() and any(folder.glob("*.py")) and not (folder / "__init__.py").exists()
    ]
    assert missing == []


def test_the_docs_link_only_to_files_inside_the_repository() -> None:
    outside = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        targets = _LINK.findall(text) + _CLIMBING_PATH.findall(text)
        for target in targets:
            if target.startswith(("http://127.0.0.1", "http://localhost", "#")):
                continue
            path = (doc.parent / target.split("#")[0]).resolve()
            if target.startswith(("http://", "https://")) or not path.is_relative_to(ROOT):
                outside.append(f"{doc.relative_to(ROOT)}: {target}")
            elif not path.exists():
                outside.append(f"{doc.relative_to(ROOT)}: {target} (no such file)")
    assert outside == []
