"""`carecoord audit`: verify the audit log, export a patient's accesses, manage its keys."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from services.cli.audit_proofs import check_proof, prove, verifier_from
from services.cli.commandline import audit_keys as load_keys
from services.cli.commandline import (
    check_target,
    fail,
    need,
    stack_settings,
    with_database,
    write_private,
)
from services.cli.witness import witness
from services.settings import Settings, get_settings

# What `audit export --format` writes: JSON Lines, CSV, or an R4B AuditEvent Bundle.
FORMATS = ("jsonl", "csv", "fhir")

audit_app = typer.Typer(
    help="The audit log: verify it, export a patient's accesses, manage its keys.",
    no_args_is_help=True,
)


@audit_app.command("verify")
def audit_verify(
    public_key: Annotated[
        Path | None,
        typer.Option(
            help="PEM public key to check checkpoint signatures with (default: "
            "the configured signing key's own)."
        ),
    ] = None,
    vkey: Annotated[
        Path | None,
        typer.Option(
            help="A file holding the log's verifier key ('<name>+<hash>+<key>'): the key and "
            "the log name to check checkpoints and their signed notes with."
        ),
    ] = None,
) -> None:
    """Check every entry, chain link, tree node and signed checkpoint; exit 1 naming the
    first bad one."""
    from services.audit import keys as audit_keys
    from services.audit import note
    from services.audit.reports import AuditReader

    settings = stack_settings()
    need(settings, "database")
    if public_key and vkey:
        raise fail("give --public-key or --vkey, not both")
    try:
        keys = audit_keys.load_reader(settings)
        pem = audit_keys.load_public_key(public_key.read_bytes()) if public_key else None
        verifier = note.parse_vkey(vkey.read_text()) if vkey else None
    except (audit_keys.BadKeys, note.BadNote, OSError, UnicodeDecodeError) as exc:
        raise fail(str(exc)) from exc
    started = time.perf_counter()
    result = with_database(
        settings,
        lambda pool: AuditReader.of(pool, keys, settings).verify(public_key=pem, vkey=verifier),
    )
    seconds = time.perf_counter() - started
    typer.echo(
        f"checked {result.entries_checked} entries in {result.chains} chain(s) and "
        f"{result.checkpoints_checked} checkpoint(s) in {seconds:.2f} s"
    )
    if result.ok:
        typer.echo("OK: the audit log is intact")
        return
    first = result.first
    assert first is not None
    typer.echo(f"BAD: first bad entry {first.label}: {first.what}", err=True)
    for problem in sorted(result.problems, key=lambda p: (p.chain, p.seq))[1:20]:
        typer.echo(f"  also {problem.label}: {problem.what}", err=True)
    raise typer.Exit(code=1)


@audit_app.command("export")
def audit_export(
    patient: Annotated[str, typer.Option(help="The patient id.")],
    from_: Annotated[
        datetime | None, typer.Option("--from", help="Start (ISO 8601; UTC if no offset).")
    ] = None,
    to: Annotated[datetime | None, typer.Option(help="End (ISO 8601; UTC if no offset).")] = None,
    format_: Annotated[
        str, typer.Option("--format", help="jsonl, csv or fhir (an R4B AuditEvent Bundle).")
    ] = "jsonl",
    out: Annotated[
        Path | None,
        typer.Option(help="Write here instead of stdout (an existing file needs --force)."),
    ] = None,
    actor: Annotated[
        str, typer.Option(help="Who is exporting, for the access record of the export.")
    ] = "",
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out file.")] = False,
) -> None:
    """Export every access to a patient's records; the export itself is recorded first.
    A file is written readable by its owner only (it holds PHI), never over an existing
    one without --force; a patient id that names no patient is refused."""
    from services.audit import export, records
    from services.audit.reports import AuditReader
    from services.common.text import TextProblem, check_user_id, clean
    from services.fhir import audit_bundle
    from services.fhir.source import UnknownPatient

    if format_ not in FORMATS:
        raise fail(f"--format must be one of {', '.join(FORMATS)}, not {format_!r}")
    # Both are stored in the export's access record: no hidden characters, and the actor
    # in the form a sign-in id has. The messages say what is wrong, not what was given.
    try:
        patient = clean(patient.strip())
    except TextProblem as exc:
        raise fail(f"--patient {exc}") from exc
    try:
        who = check_user_id(actor.strip()) if actor.strip() else records.operator()
    except TextProblem as exc:
        raise fail(f"--actor {exc}") from exc
    if not patient:
        raise fail("--patient must not be empty")
    since, until = (_aware(v) for v in (from_, to))
    if since and until and since > until:
        raise fail("--from must not be after --to")
    if out is not None:
        check_target(out, force=force)
    settings = stack_settings()
    need(settings, "database")
    keys = load_keys(settings)

    async def work(pool: Any) -> list[Any]:
        found = await AuditReader(pool, keys).access_report(patient, since, until)
        if not found and not await _enrolled(pool, patient):
            # Nothing to export and no such patient: most likely a mistyped id or an MRN.
            raise UnknownPatient(patient)
        await _record_export(pool, settings, who, patient, len(found))
        return found

    try:
        found = with_database(settings, work)
    except UnknownPatient as exc:
        raise fail(str(exc)) from exc
    if format_ == "fhir":
        lines: Iterable[str] = [audit_bundle.fhir_text(found, generated_at=datetime.now(UTC))]
    elif format_ == "csv":
        lines = export.csv_lines(found)
    else:
        lines = (line + "\n" for line in export.jsonl_lines(found))
    if out is None:
        for line in lines:
            sys.stdout.write(line)
        return
    write_private(out, "".join(lines), force=force)
    typer.echo(f"exported {len(found)} entries to {out}", err=True)


async def _enrolled(pool: Any, patient_id: str) -> bool:
    """Whether a patient with this id was ever enrolled (the event store knows them)."""
    from services.common.aggregates import Repository
    from services.common.event_store import EventStore
    from services.plans.domain.patient import PATIENT

    return (await Repository(EventStore(pool)).load(PATIENT, patient_id)).state is not None


async def _record_export(pool: Any, settings: Settings, who: str, patient: str, count: int) -> None:
    """The export is an access to the patient's records: committed to the audit outbox
    first, or refused."""
    from schemas.audit import AccessAction
    from schemas.common import AccessOutcome, Purpose
    from services.audit import records
    from services.audit.sink import AuditUnavailable, OutboxAuditSink
    from services.common.actor import Actor

    requester = records.Requester(
        actor=Actor(user_id=who, name=who, roles=frozenset({"operator"})),
        purpose=Purpose.OPERATIONS,
        user_agent="carecoord audit export",
    )
    touch = records.Touch(
        action=AccessAction.EXPORT,
        resource_type="AuditLog",
        resource_id="export",
        outcome=AccessOutcome.PERMIT,
        reason=f"audit log export of {count} entries by the operator",
    )
    batch = records.records_for(requester, touch, {patient: frozenset()}, at=datetime.now(UTC))
    sink = OutboxAuditSink(pool, settings)
    try:
        await sink.publish(batch)
    except AuditUnavailable as exc:
        raise fail(
            f"the export could not be recorded in the audit log ({exc}); nothing was exported"
        ) from exc
    finally:
        await sink.close()


@audit_app.command("rotate-key")
def audit_rotate_key() -> None:
    """Add a new audit record key and make it current; older keys stay for reading."""
    from services.audit import keys as audit_keys

    settings = get_settings()
    try:
        key_id = audit_keys.rotate(settings)
    except audit_keys.BadKeys as exc:
        raise fail(str(exc)) from exc
    typer.echo(
        f"new current audit key {key_id} in {audit_keys.key_file(settings)}; running services "
        "pick it up within a second"
    )


@audit_app.command("public-key")
def audit_public_key(
    base64: Annotated[
        bool,
        typer.Option(
            "--base64",
            help="Print its 32 raw bytes in base64, the form CARECOORD_AUDIT_PUBLIC_KEY takes.",
        ),
    ] = False,
    vkey: Annotated[
        bool,
        typer.Option(
            "--vkey",
            help="Print the verifier key of the signed checkpoints (name+hash+key, as "
            "signed-note tools and `audit check-proof` read it) instead of the PEM.",
        ),
    ] = False,
) -> None:
    """Print the checkpoint signing key's public half (PEM; --vkey, or --base64 for the
    API's CARECOORD_AUDIT_PUBLIC_KEY), for independent verification."""
    from services.audit import keys as audit_keys
    from services.audit import note

    settings = get_settings()
    try:
        public = audit_keys.load_public(settings)
    except audit_keys.BadKeys as exc:
        raise fail(str(exc)) from exc
    if base64:
        typer.echo(audit_keys.public_key_b64(public))
        return
    if vkey:
        typer.echo(note.vkey(settings.audit_log_name, public))
        return
    typer.echo(audit_keys.public_key_pem(public), nl=False)


audit_app.command("prove")(prove)
audit_app.command("check-proof")(check_proof)
audit_app.command("witness")(witness)


def _aware(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@audit_app.command("archive")
def audit_archive(
    month: Annotated[str, typer.Option(help="The month to archive, YYYY-MM.")],
    out: Annotated[Path, typer.Option(help="A new folder for the bundle.")],
    drop: Annotated[
        bool,
        typer.Option(help="Drop the month's table once archived (default: keep it detached)."),
    ] = False,
) -> None:
    """Export a month's entries with their proofs, check the bundle offline, then detach the
    month from the audit log (as the tables' owner). Verification and proofs go on."""
    from services.audit import archive_store, note
    from services.audit import keys as audit_keys

    settings = stack_settings()
    need(settings, "database")
    try:
        first_day = archive_store.month_of(month)
    except ValueError as exc:
        raise fail(f"--month {month!r} is not YYYY-MM") from exc
    if out.exists():
        raise fail(f"--out {out} exists; give a new folder")
    if not out.resolve().parent.is_dir():
        raise fail(f"--out {out}: the folder {out.resolve().parent} does not exist")
    try:
        public = audit_keys.load_public(settings)
    except audit_keys.BadKeys as exc:
        raise fail(str(exc)) from exc
    verifier = note.Verifier(settings.audit_log_name, public)
    if not settings.migrate_database_url:
        typer.echo(
            "carecoord: CARECOORD_MIGRATE_DATABASE_URL is not set: archiving as the role of "
            "CARECOORD_DATABASE_URL, which must then own the audit tables",
            err=True,
        )

    async def run(pool: Any) -> Any:
        import asyncpg

        async with pool.acquire() as conn:
            try:
                return await archive_store.archive_month(
                    conn,
                    first_day,
                    out,
                    verifier,
                    now=datetime.now(UTC),
                    grace=timedelta(days=settings.audit_archive_grace_days),
                    drop=drop,
                )
            except asyncpg.InsufficientPrivilegeError as exc:
                raise archive_store.CannotArchive(
                    "archiving detaches a partition, which only the audit tables' owner may: "
                    "set CARECOORD_MIGRATE_DATABASE_URL to the owner's URL"
                ) from exc

    try:
        done = with_database(settings, run, url=settings.migrate_database_url)
    except archive_store.CannotArchive as exc:
        raise fail(str(exc)) from exc
    typer.echo(
        f"archived {done.entries} entries of {done.chains} chain(s) for {month} into {out}; "
        "keep the folder (and the record keys) for six years; "
        + ("the month's table is dropped" if drop else "its table is kept, detached")
    )


@audit_app.command("check-archive")
def audit_check_archive(
    folder: Annotated[Path, typer.Argument(help="The bundle folder `audit archive` wrote.")],
    vkey: Annotated[str | None, typer.Option(help="The log's verifier key.")] = None,
    vkey_file: Annotated[Path | None, typer.Option(help="A file holding it.")] = None,
) -> None:
    """Check an archived month offline: no database, no network, the verifier key alone."""
    from services.audit import archive

    verifier = verifier_from(vkey, vkey_file)
    try:
        manifest = (folder / archive.MANIFEST).read_bytes()[: archive.MAX_MANIFEST + 1]
        with (folder / archive.ENTRIES).open("rb") as lines:
            checked = archive.check(manifest, lines, verifier)
    except OSError as exc:
        raise fail(f"cannot read the bundle: {exc}") from exc
    except archive.BadArchive as exc:
        typer.echo(f"BAD: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    typer.echo(
        f"OK: {checked.entries} entries of {checked.month} in {checked.chains} chain(s) are "
        "proved by checkpoints signed by " + verifier.name
    )
