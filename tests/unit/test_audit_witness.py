"""The witness's judgement of new checkpoints beside the last one it verified (pure), one
round over an in-memory log, and the state file it keeps (0600, replaced whole, refused
when altered or kept for another key)."""

from __future__ import annotations

import contextlib
import json
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from services.audit import note
from services.audit import witness as judge
from services.audit.witness import Accept, Kind, NeedProof, Problem, Seen, State, Unchanged
from services.audit.witnessing import StateFile, Witness, witness_round
from tests.signed_log import NAME, OTHER_KEY, VKEY, Chain

VERIFIER = note.parse_vkey(VKEY)
LOG = Chain(2, 20)
REWRITTEN = Chain(2, 20, seed="rewritten")


def seen(chain: Chain, size: int) -> Seen:
    text = chain.note(size)
    opened = note.open_note(text, VERIFIER)
    return Seen(opened.size, opened.root, text)


def test_a_chain_seen_for_the_first_time_is_kept_once_its_note_verifies() -> None:
    step = judge.assess(2, None, LOG.note(5), VERIFIER)
    assert step == Accept(2, seen(LOG, 5), grew_from=None)


def test_a_grown_chain_is_kept_once_its_consistency_proof_verifies() -> None:
    step = judge.assess(2, seen(LOG, 5), LOG.note(12), VERIFIER)
    assert isinstance(step, NeedProof)
    assert (step.first, step.second) == (5, 12)
    proof = LOG.consistency(5, 12).path
    assert judge.conclude(step, seen(LOG, 5), proof) == Accept(2, seen(LOG, 12), grew_from=5)


def test_the_same_checkpoint_again_changes_nothing() -> None:
    assert judge.assess(2, seen(LOG, 5), LOG.note(5), VERIFIER) == Unchanged(2)


def test_a_smaller_tree_is_named_tail_truncation() -> None:
    step = judge.assess(2, seen(LOG, 12), LOG.note(9), VERIFIER)
    assert isinstance(step, Problem)
    assert (step.chain, step.kind) == (2, Kind.TAIL_TRUNCATION)
    assert "9 entries" in step.why and "12" in step.why


def test_another_root_for_the_same_size_is_named_a_forked_history() -> None:
    step = judge.assess(2, seen(LOG, 12), REWRITTEN.note(12), VERIFIER)
    assert isinstance(step, Problem) and step.kind is Kind.FORKED_HISTORY


def test_a_larger_tree_that_does_not_extend_the_kept_one_is_named_a_forked_history() -> None:
    kept = seen(LOG, 7)
    step = judge.assess(2, kept, REWRITTEN.note(15), VERIFIER)
    assert isinstance(step, NeedProof)
    # The rewritten log's own, internally consistent, proof leads to its own old root.
    verdict = judge.conclude(step, kept, REWRITTEN.consistency(7, 15).path)
    assert isinstance(verdict, Problem) and verdict.kind is Kind.FORKED_HISTORY
    assert "do not extend the 7 verified before" in verdict.why
    # A log that cannot give a proof at all is not believed either.
    verdict = judge.conclude(step, kept, None, "fewer than 15 leaves")
    assert isinstance(verdict, Problem) and verdict.kind is Kind.FORKED_HISTORY
    assert "fewer than 15 leaves" in verdict.why


def test_a_chain_gone_is_named_a_deleted_chain_or_deleted_checkpoints() -> None:
    assert judge.gone(2, seen(LOG, 7), has_entries=False).kind is Kind.DELETED_CHAIN
    assert judge.gone(2, seen(LOG, 7), has_entries=None).kind is Kind.DELETED_CHAIN
    assert judge.gone(2, seen(LOG, 7), has_entries=True).kind is Kind.DELETED_CHECKPOINTS


def test_a_note_not_signed_by_the_log_or_of_another_chain_is_a_bad_checkpoint() -> None:
    for text in (
        LOG.note(12, key=OTHER_KEY),
        LOG.note(12, chain=3),
        LOG.note(12).replace("\n12\n", "\n13\n"),
        "not a note",
    ):
        step = judge.assess(2, seen(LOG, 7), text, VERIFIER)
        assert isinstance(step, Problem) and step.kind is Kind.BAD_CHECKPOINT, text
    # Even for a chain never seen before.
    step = judge.assess(2, None, LOG.note(12, key=OTHER_KEY), VERIFIER)
    assert isinstance(step, Problem) and step.kind is Kind.BAD_CHECKPOINT


@dataclass
class FakeView:
    """A log in memory: its newest notes, proofs from its chains, whether chains exist."""

    chains: dict[int, Chain]
    sizes: dict[int, int]
    asked: list[tuple[int, int, int]] = field(default_factory=list)

    async def notes(self) -> dict[int, str]:
        return {c: self.chains[c].note(size) for c, size in self.sizes.items()}

    async def consistency(self, chain: int, first: int, second: int) -> list[bytes]:
        self.asked.append((chain, first, second))
        return list(self.chains[chain].consistency(first, second).path)

    async def has_entries(self, chain: int) -> bool | None:
        return chain in self.sizes


@dataclass
class FakeSource:
    view_: FakeView

    @contextlib.asynccontextmanager
    async def view(self) -> AsyncIterator[FakeView]:
        yield self.view_


async def test_a_round_judges_every_chain_and_leaves_the_state_to_the_caller() -> None:
    other = Chain(5, 9)
    state = State(VKEY, {2: seen(LOG, 7), 5: seen(other, 4), 9: seen(Chain(9, 3), 3)})
    view = FakeView({2: LOG, 5: other, 7: Chain(7, 2)}, {2: 16, 5: 3, 7: 2})
    done = await witness_round(view, state, VERIFIER)
    assert [(p.chain, p.kind) for p in done.problems] == [
        (5, Kind.TAIL_TRUNCATION),
        (9, Kind.DELETED_CHAIN),
    ]
    assert [(a.chain, a.seen.size, a.grew_from) for a in done.accepted] == [
        (2, 16, 7),
        (7, 2, None),
    ]
    assert view.asked == [(2, 7, 16)]
    assert state.chains[2].size == 7


async def test_a_witness_keeps_what_verified_and_never_a_bad_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "witness.json"
    view = FakeView({2: LOG}, {2: 6})
    witness = Witness(source=FakeSource(view), state=StateFile(path), vkey=VKEY)
    assert (await witness.once()).accepted
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    view.sizes[2] = 11
    assert (await witness.once()).accepted[0].grew_from == 6
    # The log forks: named, and the state keeps the last good checkpoint.
    view.chains[2] = REWRITTEN
    view.sizes[2] = 18
    before = path.read_text()
    done = await witness.once()
    assert [p.kind for p in done.problems] == [Kind.FORKED_HISTORY]
    assert path.read_text() == before
    # Named again on the next round: the problem does not go away by being seen.
    assert [p.kind for p in (await witness.once()).problems] == [Kind.FORKED_HISTORY]
    assert StateFile(path).load(VKEY).chains[2] == seen(LOG, 11)
    assert not list(tmp_path.glob(".witness.json.*"))  # noqa: ASYNC240 - a test folder


def test_the_state_file_reads_back_and_refuses_alteration_or_another_key(tmp_path: Path) -> None:
    state = State(VKEY, {2: seen(LOG, 7), 11: seen(Chain(11, 4), 4)})
    assert judge.load_state(state.dump(), VKEY) == state
    data = json.loads(state.dump())
    # A root edited by hand (to accept a forked log next time) no longer matches its note.
    data["chains"]["2"]["root"] = data["chains"]["11"]["root"]
    with pytest.raises(judge.BadState, match="chain 2"):
        judge.load_state(json.dumps(data), VKEY)
    # A note swapped for one of another chain.
    data = json.loads(state.dump())
    data["chains"]["11"] = data["chains"]["2"]
    with pytest.raises(judge.BadState, match="chain 11"):
        judge.load_state(json.dumps(data), VKEY)
    other = note.vkey(NAME, OTHER_KEY.public_key())
    with pytest.raises(judge.BadState, match="another log key"):
        judge.load_state(state.dump(), other)
    for text in ("", "[]", '{"format": "x", "vkey": "", "chains": {}}', "{" * 100_000):
        with pytest.raises(judge.BadState):
            judge.load_state(text, VKEY)


def test_a_missing_state_file_starts_empty(tmp_path: Path) -> None:
    assert StateFile(tmp_path / "none.json").load(VKEY) == State(VKEY, {})


def test_a_second_witness_on_one_state_file_is_refused(tmp_path: Path) -> None:
    state = StateFile(tmp_path / "w.json")
    with state.locked(), pytest.raises(BlockingIOError), state.locked():
        pass
