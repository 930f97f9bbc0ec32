"""`carecoord audit prove` and `carecoord audit check-proof`: proof bundles of the audit log
from its database, and their check offline, with nothing but the bundle and the log's
verifier key (no database, no network)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from services.cli.commandline import (
    check_target,
    fail,
    need,
    stack_settings,
    with_database,
    write_private,
)

if TYPE_CHECKING:
    from services.audit import note

# A vkey is a name (at most 255 characters), 8 hex digits and 44 base64 characters.
MAX_VKEY_FILE = 1024


def prove(
    entry: Annotated[
        str | None, typer.Option(help="Prove this entry ('CHAIN:SEQ', as auditTrail shows it).")
    ] = None,
    size: Annotated[
        int | None,
        typer.Option(help="With --entry: the signed tree size (default: the newest holding it)."),
    ] = None,
    chain: Annotated[
        int | None, typer.Option(help="Prove that this chain's tree grew consistently.")
    ] = None,
    from_: Annotated[
        int | None, typer.Option("--from", help="With --chain: the earlier tree size.")
    ] = None,
    to: Annotated[
        int | None,
        typer.Option(help="With --chain: the later signed size (default: the newest)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write the bundle here instead of stdout.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out file.")] = False,
) -> None:
    """Write a self-contained JSON proof bundle: an entry's inclusion (--entry) or a
    chain's consistency between two sizes (--chain --from), with the signed checkpoints
    whose roots it leads to. Anyone can check it offline with `audit check-proof`."""
    from services.audit import proofs
    from services.audit.prover import Prover
    from services.common.errors import InvalidInput

    if (entry is None) == (chain is None):
        raise fail("give either --entry CHAIN:SEQ or --chain C --from A")
    if entry is not None:
        if from_ is not None or to is not None:
            raise fail("--from and --to go with --chain, not --entry")
        try:
            wanted_chain, seq = proofs.parse_seq(entry)
        except ValueError as exc:
            raise fail(f"--entry: {exc}") from None
        if size is not None and size < 1:
            raise fail("--size must be 1 or more")
    else:
        assert chain is not None
        if size is not None:
            raise fail("--size goes with --entry; use --to with --chain")
        if from_ is None:
            raise fail("--chain needs --from (the earlier tree size)")
        if not 0 <= chain <= proofs.MAX_CHAIN:
            raise fail(f"--chain must be between 0 and {proofs.MAX_CHAIN}")
        if from_ < 1 or (to is not None and to < from_):
            raise fail("--from must be 1 or more, and --to not below it")
    if out is not None:
        check_target(out, force=force)
    settings = stack_settings()
    need(settings, "database")

    async def work(pool: Any) -> proofs.InclusionProof | proofs.ConsistencyProof:
        prover = Prover(pool)
        if entry is not None:
            return await prover.inclusion(wanted_chain, seq, size)
        assert chain is not None and from_ is not None
        return await prover.consistency(chain, from_, to)

    try:
        proof = with_database(settings, work)
    except InvalidInput as exc:
        raise fail(str(exc)) from None
    text = proofs.dump(proof.bundle())
    if out is None:
        sys.stdout.write(text)
        return
    write_private(out, text, force=force)
    typer.echo(f"wrote the proof to {out}", err=True)


def check_proof(
    bundle: Annotated[Path, typer.Argument(help="The proof bundle (`audit prove`'s JSON).")],
    vkey: Annotated[
        str | None,
        typer.Option(help="The log's verifier key (`audit public-key --vkey`), got out of band."),
    ] = None,
    vkey_file: Annotated[Path | None, typer.Option(help="A file holding the verifier key.")] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="For a consistency proof: the signed checkpoint of the earlier size that you "
            "kept (checked as well as, or instead of, the bundle's)."
        ),
    ] = None,
) -> None:
    """Check a proof bundle offline: the checkpoint's signature and origin, then the proof
    against its root. Exit 0 (one line) when it holds, 1 naming what failed, 2 when the
    bundle or key cannot be used."""
    from services.audit import note, proofs

    verifier = verifier_from(vkey, vkey_file)
    kept = None
    if checkpoint is not None:
        kept = _read(checkpoint, note.MAX_NOTE, "--checkpoint")
    raw = _read_bytes(bundle, proofs.MAX_BUNDLE, "the bundle")
    try:
        proof = proofs.read(raw)
        if kept is not None and not isinstance(proof, proofs.ConsistencyProof):
            raise fail("--checkpoint goes with a consistency proof")
        line = proofs.check(proof, verifier, kept=kept)
    except proofs.BadBundle as exc:
        raise fail(f"{bundle}: {exc}") from None
    except proofs.Refused as exc:
        typer.echo(f"BAD: {exc}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(line)


def verifier_from(vkey: str | None, vkey_file: Path | None) -> note.Verifier:
    """The log's verifier key from --vkey or --vkey-file (exactly one; the file bounded),
    or a one-line failure (exit 2)."""
    from services.audit import note

    if (vkey is None) == (vkey_file is None):
        raise fail("give the log's verifier key: --vkey KEY or --vkey-file FILE")
    text = vkey if vkey is not None else _read(vkey_file, MAX_VKEY_FILE, "--vkey-file")
    try:
        return note.parse_vkey(text)
    except note.BadNote as exc:
        raise fail(f"the verifier key: {exc}") from None


def _read_bytes(path: Path, limit: int, what: str) -> bytes:
    try:
        with path.open("rb") as stream:
            raw = stream.read(limit + 1)
    except OSError as exc:
        raise fail(f"{what} {path}: {exc.strerror or exc}") from None
    if len(raw) > limit:
        raise fail(f"{what} {path} is larger than {limit} bytes: not one of ours")
    return raw


def _read(path: Path | None, limit: int, what: str) -> str:
    assert path is not None
    try:
        return _read_bytes(path, limit, what).decode("utf-8")
    except UnicodeDecodeError:
        raise fail(f"{what} {path} is not UTF-8 text") from None
