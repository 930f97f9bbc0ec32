"""Exports the SDL of the schema the API serves to docs/schema.graphql.

`python -m services.api.graphql.sdl` rewrites the file; with `--check` it exits 1 when the
file differs from what the API serves, so `make lint` catches a change to the API that
the published schema does not show (as `python -m schemas.export --check` does for the
JSON Schema of the events).
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from pathlib import Path

from services.api.graphql.schema import schema

DEFAULT_FILE = Path("docs/schema.graphql")


def render() -> str:
    """The served schema's SDL, as the file holds it."""
    return schema.as_str() + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.api.graphql.sdl", description=__doc__)
    parser.add_argument("file", nargs="?", type=Path, default=DEFAULT_FILE)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    path: Path = args.file
    served = render()
    current = path.read_text(encoding="utf-8") if path.is_file() else None
    if args.check:
        if current == served:
            return 0
        if current is None:
            print(f"missing: {path}", file=sys.stderr)
        else:
            diff = difflib.unified_diff(
                current.splitlines(keepends=True),
                served.splitlines(keepends=True),
                f"{path} (checked in)",
                "served",
                n=1,
            )
            sys.stderr.writelines(list(diff)[:60])
        print(f"stale: {path}; run: python -m services.api.graphql.sdl", file=sys.stderr)
        return 1
    if current != served:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(served, encoding="utf-8")
        print(f"wrote: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
