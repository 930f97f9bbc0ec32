"""The `carecoord` command line: the entry point every process of the stack starts from.

Nothing in services/ imports it; it imports whatever it runs."""

from __future__ import annotations

from services.cli.main import app, main

__all__ = ["app", "main"]
