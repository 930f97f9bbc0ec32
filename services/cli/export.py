"""`carecoord export`: a patient's record as a FHIR R4B Bundle (`export fhir`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from schemas.common import Purpose
from services.cli.commandline import (
    audit_keys,
    check_target,
    fail,
    need,
    stack_settings,
    with_database,
    write_private,
)

export_app = typer.Typer(
    help="Export a patient's record in a standard format.",
    no_args_is_help=True,
)


@export_app.command("fhir")
def export_fhir(
    patient: Annotated[str, typer.Option(help="The patient id.")],
    out: Annotated[
        Path | None,
        typer.Option(help="Write here instead of stdout (an existing file needs --force)."),
    ] = None,
    purpose: Annotated[
        Purpose,
        typer.Option(
            case_sensitive=False,
            help="Why the record is exported; recorded in the audit log. UNDERWRITING and "
            "EMPLOYMENT leave every GENETIC-tagged item out (GINA).",
        ),
    ] = Purpose.TREATMENT,
    actor: Annotated[
        str, typer.Option(help="Who is exporting, for the access record of the export.")
    ] = "",
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out file.")] = False,
) -> None:
    """Write a FHIR R4B Bundle of one patient: Patient, CareTeam, CarePlans with their Goals,
    Tasks, Consents and the patient's AuditEvents. The export itself is recorded first."""
    from services.audit.records import operator
    from services.common.errors import StateConflict
    from services.fhir.export import ExportNotRecorded, bundle_text, export_patient
    from services.fhir.mapping import Exported
    from services.fhir.source import UnknownPatient

    if not patient.strip():
        raise fail("--patient must not be empty")
    if out is not None:
        check_target(out, force=force)
    settings = stack_settings()
    need(settings, "database")
    keys = audit_keys(settings)
    who = actor.strip() or operator()

    async def work(pool: Any) -> Exported:
        return await export_patient(
            settings, patient, purpose=purpose, actor=who, pool=pool, keys=keys
        )

    try:
        exported = with_database(settings, work)
    except (UnknownPatient, ExportNotRecorded, StateConflict) as exc:
        raise fail(str(exc)) from exc
    if exported.withheld:
        # The same words whether or not anything was withheld: this line must not tell
        # whoever reads it that the patient has genetic information.
        tags = ", ".join(sorted(exported.withheld))
        typer.echo(
            f"carecoord: {tags} items are left out of an export for {purpose.value} (GINA)",
            err=True,
        )
    text = bundle_text(exported)
    if out is None:
        sys.stdout.write(text)
        return
    write_private(out, text, force=force)
    count = sum(exported.counts.values())
    typer.echo(f"exported {count} resources to {out}", err=True)
