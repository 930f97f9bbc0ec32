"""What `carecoord demo` prints: the seeded records' ids and two labelled board URLs."""

from __future__ import annotations

from services.demo import scenario as s
from services.demo.interventions import INTERVENTIONS
from services.demo.model import Demo, Member
from services.demo.seed import TOKEN_TTL_S


def _sees(member: Member) -> str:
    if member.sees_genetic:
        return "sees the GENETIC items in full (CYP2C9 result, family history), by consent"
    return "sees the GENETIC items as [restricted] (the consent does not cover the discipline)"


def report(demo: Demo) -> str:
    disciplines = ", ".join(m.discipline + (" (lead)" if m.lead else "") for m in demo.members)
    genetic_notes = sum(1 for n in s.NOTES if n.sensitivity)
    lines = [
        f"carecoord demo: a fictional care team seeded on {demo.base_url}",
        f"  team      {demo.team_id}  {s.TEAM_NAME}: {disciplines}",
        f"  patient   {demo.patient_id}  {s.PATIENT_AGE} years, type 2 diabetes, hypertension, "
        "mild CKD (G2 A2), works night shifts",
        f"  plan      {demo.plan_id}  ACTIVE, {len(s.GOALS)} goals, "
        f"{len(INTERVENTIONS)} interventions, next review in {s.REVIEW_IN_DAYS // 7} weeks",
        f"  readings  a week of home glucose, {s.HIGH_READINGS} above "
        f"{s.GLUCOSE_MONITORING.high:g} mg/dL: one signal task for the "
        f"{s.GLUCOSE_MONITORING.responsible.discipline.value}, on the huddle agenda",
        f"  huddle    {demo.huddle_id}  CLOSED, {len(s.NOTES)} notes ({genetic_notes} GENETIC), "
        f"{len(s.ACTION_ITEMS)} action items",
        "",
        f"DEV ONLY  each board URL below holds a bearer token, valid {TOKEN_TTL_S // 3600} "
        "hours and signed with this stack's secret: for development and demos only.",
    ]
    for member in demo.viewers:
        who = member.discipline.replace("_", " ").capitalize()
        lines += [f"  {who} ({member.name}): {_sees(member)}", f"    {demo.board_url(member)}"]
    return "\n".join(lines)
