"""`carecoord audit witness`: keep the last checkpoint verified per chain outside the
database and name tail truncation, forked histories and deleted chains.

It reads the log's own database (read-only) by default, or, with --api, the GraphQL API
as a compliance officer (a witness run by another party, who needs no database access).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from services.cli.audit_proofs import MAX_VKEY_FILE, _read
from services.cli.commandline import fail, need, stack_settings
from services.settings import Settings

if TYPE_CHECKING:
    from services.audit.witnessing import Witness

STATE_FILE = "witness-state.json"
# An answer to the witness's queries is a few notes and proofs; more is not the log.
MAX_ANSWER = 4 * 1024 * 1024
_CHECKPOINTS = "query { auditCheckpoints }"
_CONSISTENCY = (
    "query($chain: Int!, $from: Int!, $to: Int) { auditConsistencyProof(chain: $chain, "
    "fromSize: $from, toSize: $to) { path toSize } }"
)


def witness(
    state: Annotated[
        Path | None,
        typer.Option(
            help="The state file (default CARECOORD_WITNESS_STATE, else witness-state.json "
            "in the data dir). Keep it where the database's owner cannot write."
        ),
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="One round, then exit (1: a problem).")] = (
        False
    ),
    every: Annotated[
        float | None,
        typer.Option(
            help="Seconds between rounds (default CARECOORD_WITNESS_EVERY_SECONDS).", min=0.1
        ),
    ] = None,
    vkey: Annotated[
        str | None,
        typer.Option(help="The log's verifier key (default CARECOORD_WITNESS_VKEY)."),
    ] = None,
    vkey_file: Annotated[Path | None, typer.Option(help="A file holding the verifier key.")] = None,
    api: Annotated[
        str | None,
        typer.Option(
            help="Read the log over this API (e.g. https://carecoord.example.org) as a "
            "compliance officer, instead of the database."
        ),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            help="With --api: a file holding the compliance officer's bearer token (read "
            "every round, so it can be renewed; never give a token on the command line)."
        ),
    ] = None,
) -> None:
    """Check every chain's newest signed checkpoint against the last one verified (kept in
    the state file), by a consistency proof, and name what is wrong: tail truncation,
    forked history, deleted chain or checkpoints, or a checkpoint not signed by the key."""
    if once and every is not None:
        raise fail("give --once or --every, not both")
    settings = stack_settings()
    if vkey is not None and vkey_file is not None:
        raise fail("give --vkey or --vkey-file, not both")
    if vkey_file is not None:
        vkey = _read(vkey_file, MAX_VKEY_FILE, "--vkey-file").strip()
    if (api is None) != (token_file is None):
        raise fail("--api and --token-file go together")
    raise typer.Exit(
        code=run(
            settings, state=state, once=once, every=every, vkey=vkey, api=api, token=token_file
        )
    )


def run(
    settings: Settings,
    *,
    state: Path | None = None,
    once: bool = False,
    every: float | None = None,
    vkey: str | None = None,
    api: str | None = None,
    token: Path | None = None,
) -> int:
    """Run a witness; its exit code (0 good, 1 a problem with --once, 2 unusable)."""
    from services.audit import note
    from services.audit.witnessing import StateFile, Witness
    from services.common.log import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    key = vkey or settings.witness_vkey or _local_vkey(settings)
    try:
        note.parse_vkey(key)
    except note.BadNote as exc:
        raise fail(f"the verifier key: {exc}") from None
    path = state or settings.witness_state or settings.data_dir / STATE_FILE
    if not path.resolve().parent.is_dir():
        raise fail(f"--state {path}: the folder {path.resolve().parent} does not exist")
    if api is None:
        need(settings, "database")
    interval = every if every is not None else settings.witness_every_seconds

    async def main() -> int:
        async with _source(settings, api, token) as source:
            witness = Witness(source=source, state=StateFile(path), vkey=key)
            if once:
                return await _round(witness, loud=True)
            stop = _stop_on_signals()
            while not stop.is_set():
                await _round(witness, loud=False)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=interval)
            return 0

    return asyncio.run(main())


async def _round(witness: Witness, *, loud: bool) -> int:
    from services.audit import witness as judge
    from services.audit.witnessing import SourceError, summary
    from services.common.log import get_logger

    try:
        done = await witness.once()
    except BlockingIOError:
        raise fail("another witness holds this state file's lock") from None
    except judge.BadState as exc:
        raise fail(f"the state file: {exc}") from None
    except SourceError as exc:
        get_logger(__name__).warning("witness.unreachable", why=str(exc))
        if loud:
            raise fail(str(exc)) from None
        return 2
    if loud:
        for line in summary(done):
            typer.echo(line, err=line.startswith("PROBLEM"))
    return 1 if done.problems else 0


def _local_vkey(settings: Settings) -> str:
    """The vkey of the local audit keys: the embedded stack's own witness."""
    from services.audit import keys as audit_keys
    from services.audit import note

    try:
        public = audit_keys.load_public(settings)
    except audit_keys.BadKeys as exc:
        raise fail(f"no verifier key: pass --vkey or set CARECOORD_WITNESS_VKEY ({exc})") from None
    return note.vkey(settings.audit_log_name, public)


@contextlib.asynccontextmanager
async def _source(settings: Settings, api: str | None, token: Path | None) -> AsyncIterator[Any]:
    from services.audit.witnessing import DatabaseSource
    from services.common import db

    if api is not None:
        assert token is not None
        async with ApiSource.open(api, token) as source:
            yield source
        return
    assert settings.database_url is not None
    try:
        pool = await db.create_pool(settings.database_url, min_size=1, max_size=2)
    except db.DatabaseUnavailable as exc:
        raise fail(str(exc)) from exc
    try:
        yield DatabaseSource(pool)
    finally:
        await pool.close()


@dataclass
class ApiSource:
    """The log read over its GraphQL API (auditCheckpoints, auditConsistencyProof)."""

    url: str
    token_file: Path
    session: Any

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, base: str, token_file: Path) -> AsyncIterator[ApiSource]:
        import aiohttp

        url = base.rstrip("/")
        if not url.startswith(("https://", "http://")):
            raise fail("--api must be an http(s) URL")
        if not url.endswith("/graphql"):
            url += "/graphql"
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            yield cls(url, token_file, session)

    @contextlib.asynccontextmanager
    async def view(self) -> AsyncIterator[ApiSource]:
        yield self

    async def _ask(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        import aiohttp

        from services.audit.witnessing import SourceError

        try:
            token = self.token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SourceError(f"the token file cannot be read ({type(exc).__name__})") from None
        headers = {"Authorization": f"Bearer {token}", "X-Purpose-Of-Use": "OPERATIONS"}
        try:
            async with self.session.post(
                self.url, json={"query": query, "variables": variables}, headers=headers
            ) as response:
                raw = await response.content.read(MAX_ANSWER + 1)
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SourceError(f"the API did not answer ({type(exc).__name__})") from None
        if len(raw) > MAX_ANSWER:
            raise SourceError("the API's answer is larger than any the witness asks for")
        try:
            answer = json.loads(raw)
        except ValueError:
            raise SourceError(f"the API answered HTTP {status} without JSON") from None
        if not isinstance(answer, dict):
            raise SourceError("the API's answer is not a GraphQL response")
        errors = answer.get("errors") or []
        if errors:
            first = errors[0] if isinstance(errors[0], dict) else {}
            code = (first.get("extensions") or {}).get("code", "")
            message = str(first.get("message", ""))[:300]
            if code == "BAD_USER_INPUT":
                raise ValueError(message)
            raise SourceError(f"the API refused: {code or 'error'}: {message}")
        data = answer.get("data")
        if not isinstance(data, dict):
            raise SourceError("the API's answer carries no data")
        return data

    async def notes(self) -> dict[int, str]:
        from services.audit import note
        from services.audit.witnessing import SourceError

        data = await self._ask(_CHECKPOINTS, {})
        found: dict[int, str] = {}
        texts = data.get("auditCheckpoints")
        if not isinstance(texts, list):
            raise SourceError("the API gave no list of checkpoints")
        for text in texts:
            # The chain is read from the origin here; the witness checks the signature.
            try:
                origin = note.parse_checkpoint(str(text).partition("\n\n")[0] + "\n").origin
                chain = int(origin.rpartition("/chain/")[2])
            except (note.BadNote, ValueError):
                raise SourceError("the API gave a checkpoint that is not one") from None
            found[chain] = str(text)
        return found

    async def consistency(self, chain: int, first: int, second: int) -> list[bytes]:
        from services.audit.witnessing import SourceError

        data = await self._ask(_CONSISTENCY, {"chain": chain, "from": first, "to": second})
        proof = data.get("auditConsistencyProof")
        if not isinstance(proof, dict) or proof.get("toSize") != second:
            raise SourceError("the API gave no consistency proof")
        try:
            return [base64.b64decode(str(p), validate=True) for p in proof.get("path") or []]
        except binascii.Error:
            raise ValueError("the API gave a proof that is not base64") from None

    async def has_entries(self, chain: int) -> bool | None:
        return None


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return stop
