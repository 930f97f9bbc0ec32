"""The witness's view of a log through its GraphQL API: an API's answer is untrusted input
(bounded, parsed, every checkpoint checked by the witness itself); a proof the log refuses
to give is no proof, and an API that cannot be asked gives no verdict."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from services.audit import note, proofs
from services.audit.witness import Kind, Seen, State
from services.audit.witnessing import SourceError, witness_round
from services.cli.witness import MAX_ANSWER, ApiSource
from tests.signed_log import VKEY, Chain

LOG = Chain(1, 9)


@dataclass
class _Answer:
    status: int
    body: bytes

    @property
    def content(self) -> _Answer:
        return self

    async def read(self, limit: int) -> bytes:
        return self.body[:limit]


@dataclass
class Scripted:
    """A session that answers each query with the next scripted body."""

    bodies: list[bytes]
    sent: list[dict[str, Any]] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def post(
        self, url: str, *, json: dict[str, Any], headers: dict[str, str]
    ) -> AsyncIterator[_Answer]:
        self.sent.append({"url": url, "headers": headers, **json})
        yield _Answer(200, self.bodies.pop(0))


def data(value: dict[str, Any]) -> bytes:
    return json.dumps({"data": value}).encode()


def source(tmp_path: Path, *bodies: bytes) -> tuple[ApiSource, Scripted]:
    token = tmp_path / "token"
    token.write_text("a-token\n")
    session = Scripted(list(bodies))
    return ApiSource("https://log.example/graphql", token, session), session


async def test_checkpoints_and_proofs_are_read_from_the_answers(tmp_path: Path) -> None:
    proof = LOG.consistency(4, 9)
    api, session = source(
        tmp_path,
        data({"auditCheckpoints": [LOG.note(9)]}),
        data({"auditConsistencyProof": {"toSize": 9, "path": [proofs.b64(p) for p in proof.path]}}),
    )
    assert await api.notes() == {1: LOG.note(9)}
    assert await api.consistency(1, 4, 9) == list(proof.path)
    assert session.sent[0]["headers"]["Authorization"] == "Bearer a-token"
    assert session.sent[1]["variables"] == {"chain": 1, "from": 4, "to": 9}


async def test_a_proof_the_api_refuses_to_give_is_a_forked_history(tmp_path: Path) -> None:
    refused = json.dumps(
        {"errors": [{"message": "no tree of 9", "extensions": {"code": "BAD_USER_INPUT"}}]}
    ).encode()
    api, _ = source(tmp_path, data({"auditCheckpoints": [LOG.note(9)]}), refused)
    opened = note.open_note(LOG.note(4), note.parse_vkey(VKEY))
    state = State(VKEY, {1: Seen(4, opened.root, LOG.note(4))})
    done = await witness_round(api, state, note.parse_vkey(VKEY))
    assert [(p.chain, p.kind) for p in done.problems] == [(1, Kind.FORKED_HISTORY)]
    assert "no tree of 9" in done.problems[0].why


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"<html>bad gateway</html>", "without JSON"),
        (b"[]", "not a GraphQL response"),
        (b" " * (MAX_ANSWER + 1), "larger than"),
        (
            json.dumps(
                {"errors": [{"message": "no", "extensions": {"code": "FORBIDDEN"}}]}
            ).encode(),
            "FORBIDDEN",
        ),
        (data({"auditCheckpoints": "x"}), "no list"),
        (data({"auditCheckpoints": ["not a note"]}), "not one"),
    ],
)
async def test_an_answer_that_is_not_the_logs_gives_no_verdict(
    tmp_path: Path, body: bytes, why: str
) -> None:
    api, _ = source(tmp_path, body)
    with pytest.raises(SourceError, match=why):
        await api.notes()


async def test_a_proof_for_another_size_is_no_proof(tmp_path: Path) -> None:
    api, _ = source(tmp_path, data({"auditConsistencyProof": {"toSize": 8, "path": []}}))
    with pytest.raises(SourceError, match="no consistency proof"):
        await api.consistency(1, 4, 9)
