"""Running a witness: where the checkpoints and proofs come from (the database, read-only,
or any other `Source`), the state file it keeps outside the database, and one round.

The state file is replaced atomically (written beside it, fsync-ed, renamed over it),
created 0600, and held under an exclusive lock while a round runs, so two witnesses never
interleave on one file. A problem never reaches the file: the chain keeps the last
checkpoint verified, and the problem is named again on every round until someone looks.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import asyncpg

from services.audit import store
from services.audit import witness as judge
from services.audit.note import Verifier, parse_vkey
from services.common.log import get_logger

log = get_logger(__name__)


class SourceError(Exception):
    """The log could not be asked (unreachable, refused): no verdict this round."""


class View(Protocol):
    """One consistent look at the log."""

    async def notes(self) -> dict[int, str]:
        """The newest signed note of every chain that has one."""
        ...

    async def consistency(self, chain: int, first: int, second: int) -> list[bytes]:
        """PROOF(first, second) of the chain; ValueError when the log cannot give it."""
        ...

    async def has_entries(self, chain: int) -> bool | None:
        """Whether the chain still has entries (None: this source cannot tell)."""
        ...


class Source(Protocol):
    def view(self) -> contextlib.AbstractAsyncContextManager[View]: ...


@dataclass
class DatabaseSource:
    """The log's own database, read in one read-only snapshot per round."""

    pool: asyncpg.Pool[Any]

    @contextlib.asynccontextmanager
    async def view(self) -> AsyncIterator[View]:
        async with (
            self.pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            yield _DatabaseView(conn)


@dataclass
class _DatabaseView:
    conn: Any

    async def notes(self) -> dict[int, str]:
        return {
            c.chain: c.note for c in await store.latest_checkpoints(self.conn) if c.note is not None
        }

    async def consistency(self, chain: int, first: int, second: int) -> list[bytes]:
        try:
            return await store.consistency_proof(self.conn, chain, first, second)
        except store.TreeDamaged as exc:
            raise ValueError(str(exc)) from None

    async def has_entries(self, chain: int) -> bool | None:
        return await store.tree_size(self.conn, chain) > 0


@dataclass(frozen=True)
class Round:
    problems: list[judge.Problem]
    accepted: list[judge.Accept]
    unchanged: int


async def witness_round(view: View, state: judge.State, verifier: Verifier) -> Round:
    """Judge every chain's newest checkpoint beside the state (which is left unchanged)."""
    problems: list[judge.Problem] = []
    accepted: list[judge.Accept] = []
    unchanged = 0
    notes = await view.notes()
    for chain in sorted(set(notes) | set(state.chains)):
        seen = state.chains.get(chain)
        text = notes.get(chain)
        step: judge.Step
        if text is None:
            assert seen is not None
            step = judge.gone(chain, seen, await view.has_entries(chain))
        else:
            step = judge.assess(chain, seen, text, verifier)
        if isinstance(step, judge.NeedProof):
            assert seen is not None
            try:
                proof: list[bytes] | None = await view.consistency(chain, step.first, step.second)
                why = ""
            except ValueError as exc:
                proof, why = None, str(exc)
            step = judge.conclude(step, seen, proof, why)
        if isinstance(step, judge.Problem):
            problems.append(step)
        elif isinstance(step, judge.Accept):
            accepted.append(step)
        else:
            unchanged += 1
    return Round(problems, accepted, unchanged)


# --- the state file --------------------------------------------------------------------------


@dataclass(frozen=True)
class StateFile:
    path: Path

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the state's lock file (beside it, 0600) for a round; BlockingIOError when
        another witness holds it."""
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            yield
        finally:
            os.close(fd)

    def load(self, vkey: str) -> judge.State:
        """The state kept (empty the first time: every chain is then trusted on first use)."""
        try:
            with self.path.open("rb") as stream:
                raw = stream.read(judge.MAX_STATE + 1)
        except FileNotFoundError:
            return judge.State(vkey, {})
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise judge.BadState("the state file is not UTF-8 text") from None
        return judge.load_state(text, vkey)

    def save(self, state: judge.State) -> None:
        folder = self.path.resolve().parent
        fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{self.path.name}.")  # 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as stream:
                stream.write(state.dump())
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        directory = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


@dataclass
class Witness:
    """A witness of one log (`vkey`) over `source`, keeping its state in `state`."""

    source: Source
    state: StateFile
    vkey: str

    async def once(self) -> Round:
        """One round: judge, log every problem, keep what verified. Raises SourceError or
        judge.BadState when no verdict could be reached."""
        verifier = parse_vkey(self.vkey)
        with self.state.locked():
            state = self.state.load(self.vkey)
            try:
                async with self.source.view() as view:
                    done = await witness_round(view, state, verifier)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                raise SourceError(f"the log could not be read: {type(exc).__name__}") from exc
            if done.accepted:
                self.state.save(state.with_accepted(done.accepted))
        for problem in done.problems:
            log.error(
                "witness.problem", chain=problem.chain, kind=str(problem.kind), why=problem.why
            )
        for accepted in done.accepted:
            log.info(
                "witness.verified",
                chain=accepted.chain,
                size=accepted.seen.size,
                grew_from=accepted.grew_from,
            )
        return done


def summary(done: Round) -> Sequence[str]:
    """One line per problem, then one saying how the round went."""
    lines = [f"PROBLEM {p}" for p in done.problems]
    grew = sum(1 for a in done.accepted if a.grew_from is not None)
    first = len(done.accepted) - grew
    lines.append(
        f"{'BAD' if done.problems else 'OK'}: {grew} chain(s) grew consistently, "
        f"{first} seen for the first time, {done.unchanged} unchanged, "
        f"{len(done.problems)} problem(s)"
    )
    return lines
