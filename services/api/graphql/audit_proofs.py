"""The audit log's Merkle proofs and signed checkpoints, for compliance officers and the
witnesses they run: inclusion and consistency proofs, the newest checkpoints, the key.

Each answer is checkable offline with the log's verifier key (`auditLogKey`): the proofs
come with the signed notes whose roots they lead to. Hashes and signatures only: no
patient data, so nothing here is decrypted. Every call is recorded in the audit log like
the other audit queries.
"""

from __future__ import annotations

import strawberry

from services.api.graphql.access import compliance_officer
from services.api.graphql.context import Info
from services.audit import note
from services.audit.proofs import MAX_CHAIN, b64, parse_seq
from services.audit.prover import Prover
from services.common.errors import InvalidInput


@strawberry.type(
    description="Entry `seq` is leaf `leafIndex` of its chain's Merkle tree of `treeSize` "
    "leaves (RFC 9162), whose root the signed note `checkpoint` states. Hashes in base64."
)
class AuditInclusionProof:
    seq: strawberry.ID = strawberry.field(description="The entry, 'chain:sequence'.")
    chain: int
    leaf_index: int = strawberry.field(description="seq - 1.")
    tree_size: int
    entry_hash: str = strawberry.field(description="The entry's hash (the leaf's data).")
    leaf_hash: str = strawberry.field(description="SHA-256(0x00 || entryHash).")
    path: list[str] = strawberry.field(description="The audit path, leaf side first.")
    checkpoint: str = strawberry.field(
        description="The C2SP signed note (tlog-checkpoint) of the tree of treeSize leaves."
    )


@strawberry.type(
    description="The chain's tree of `toSize` leaves extends its tree of `fromSize` "
    "(RFC 9162 consistency proof). Hashes in base64."
)
class AuditConsistencyProof:
    chain: int
    from_size: int
    to_size: int
    path: list[str]
    from_checkpoint: str | None = strawberry.field(
        description="The signed note of the tree of fromSize leaves, if one was signed at "
        "that size (a witness checks against the one it kept)."
    )
    to_checkpoint: str = strawberry.field(description="The signed note of toSize leaves.")


def _size(value: int | None, name: str) -> int | None:
    if value is not None and value < 1:
        raise InvalidInput(f"{name} must be 1 or more (a signed checkpoint's size).")
    return value


async def audit_inclusion_proof(
    info: Info, seq: strawberry.ID, tree_size: int | None = None
) -> AuditInclusionProof:
    ctx = info.context
    compliance_officer(ctx, patient_id=None, what="inclusion proof")
    try:
        chain, number = parse_seq(str(seq))
    except ValueError as exc:
        raise InvalidInput(f"{exc}.") from None
    size = _size(tree_size, "treeSize")
    proof = await Prover(ctx.database).inclusion(chain, number, size)
    return AuditInclusionProof(
        seq=strawberry.ID(proof.label),
        chain=proof.chain,
        leaf_index=proof.leaf_index,
        tree_size=proof.tree_size,
        entry_hash=b64(proof.entry_hash),
        leaf_hash=b64(proof.leaf_hash),
        path=[b64(p) for p in proof.path],
        checkpoint=proof.checkpoint,
    )


async def audit_consistency_proof(
    info: Info, chain: int, from_size: int, to_size: int | None = None
) -> AuditConsistencyProof:
    ctx = info.context
    compliance_officer(ctx, patient_id=None, what="consistency proof")
    if not 0 <= chain <= MAX_CHAIN:
        raise InvalidInput(f"chain must be between 0 and {MAX_CHAIN}.")
    first = _size(from_size, "fromSize")
    assert first is not None
    proof = await Prover(ctx.database).consistency(chain, first, _size(to_size, "toSize"))
    return AuditConsistencyProof(
        chain=proof.chain,
        from_size=proof.from_size,
        to_size=proof.to_size,
        path=[b64(p) for p in proof.path],
        from_checkpoint=proof.from_checkpoint,
        to_checkpoint=proof.to_checkpoint,
    )


async def audit_checkpoints(info: Info) -> list[str]:
    ctx = info.context
    compliance_officer(ctx, patient_id=None, what="checkpoints")
    return await Prover(ctx.database).notes()


def audit_log_key(info: Info) -> str:
    ctx = info.context
    compliance_officer(ctx, patient_id=None, what="log key")
    keys = ctx.services.keyring.get()
    return note.vkey(ctx.settings.audit_log_name, keys.verify_key)


@strawberry.type
class AuditProofsQuery:
    audit_inclusion_proof: AuditInclusionProof = strawberry.field(
        resolver=audit_inclusion_proof,
        description="Compliance officers: prove that an entry ('chain:sequence') is in its "
        "chain's tree of treeSize entries (default: the newest signed tree holding it). "
        "treeSize must be a size a checkpoint was signed at.",
    )
    audit_consistency_proof: AuditConsistencyProof = strawberry.field(
        resolver=audit_consistency_proof,
        description="Compliance officers: prove that a chain's tree of toSize entries "
        "(default: the newest signed) extends its tree of fromSize. toSize must be a size "
        "a checkpoint was signed at.",
    )
    audit_checkpoints: list[str] = strawberry.field(
        resolver=audit_checkpoints,
        description="Compliance officers and their witnesses: the newest signed checkpoint "
        "(C2SP signed note) of every chain.",
    )
    audit_log_key: str = strawberry.field(
        resolver=audit_log_key,
        description="Compliance officers: the verifier key (vkey) the checkpoints are "
        "signed with; keep a copy obtained out of band to check against.",
    )
