"""Seeding the demo team through the public GraphQL API, step by step, as its members.

Each member gets a development token, and enters what is theirs: the physician builds
the team and the plan, the genetic counselor records the consent, each discipline adds
its own interventions and huddle notes. Nothing is written but through the API.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

from schemas.common import GoalStatus, PlanStatus
from services.common.auth import mint_token
from services.demo import scenario as s
from services.demo.client import Api, DemoError, base_url_of, session
from services.demo.interventions import INTERVENTIONS
from services.demo.model import Demo, Member

TOKEN_TTL_S = 8 * 3600
# The boards follow the writes within moments; this long means the worker is not running.
BOARD_WAIT_S = 30.0

CREATE_TEAM = "mutation($name: String!) { createTeam(name: $name) { id } }"
ASSIGN_ROLE = """mutation($team: ID!, $user: ID!, $name: String!, $discipline: Discipline!,
  $lead: Boolean!) {
  assignRole(teamId: $team, userId: $user, name: $name, discipline: $discipline, lead: $lead) {
    version } }"""
ENROLL = """mutation($team: ID!, $mrn: String!, $name: String!, $birthDate: Date!) {
  enrollPatient(teamId: $team, mrn: $mrn, name: $name, birthDate: $birthDate) { id } }"""
GRANT_CONSENT = """mutation($patient: ID!, $categories: [Sensitivity!]!, $purposes: [Purpose!]!,
  $disciplines: [Discipline!]!, $evidence: String!) {
  grantConsent(patientId: $patient, categories: $categories, purposes: $purposes,
    disciplines: $disciplines, evidence: $evidence) { id } }"""
CREATE_PLAN = """mutation($patient: ID!, $title: String!) {
  createCarePlan(patientId: $patient, title: $title) { id } }"""
ADD_GOAL = """mutation($plan: ID!, $description: String!, $target: String, $dueDate: Date) {
  addGoal(planId: $plan, description: $description, target: $target, dueDate: $dueDate) {
    goals { id } } }"""
ADD_INTERVENTION = """mutation($plan: ID!, $kind: InterventionKind!, $tier: Tier!,
  $title: String!, $detail: String, $discipline: Discipline!, $sensitivity: [Sensitivity!],
  $dueDate: Date) {
  addIntervention(planId: $plan, kind: $kind, tier: $tier, title: $title, detail: $detail,
    responsibleDiscipline: $discipline, sensitivity: $sensitivity, dueDate: $dueDate) {
    version } }"""
SET_PLAN_STATUS = """mutation($plan: ID!, $status: PlanStatus!) {
  setPlanStatus(planId: $plan, status: $status) { status } }"""
SET_GOAL_STATUS = """mutation($plan: ID!, $goal: ID!, $status: GoalStatus!) {
  setGoalStatus(planId: $plan, goalId: $goal, status: $status) { version } }"""
REVIEW = """mutation($plan: ID!, $summary: String!, $next: Date!) {
  reviewCarePlan(planId: $plan, summary: $summary, nextReviewDate: $next) {
    nextReviewDate } }"""
SCHEDULE_HUDDLE = """mutation($team: ID!, $at: DateTime!) {
  scheduleHuddle(teamId: $team, at: $at) { id } }"""
OPEN_HUDDLE = "mutation($huddle: ID!) { openHuddle(huddleId: $huddle) { status } }"
CLOSE_HUDDLE = "mutation($huddle: ID!) { closeHuddle(huddleId: $huddle) { status } }"
RECORD_NOTE = """mutation($huddle: ID!, $text: String!, $patient: ID,
  $sensitivity: [Sensitivity!]) {
  recordHuddleNote(huddleId: $huddle, text: $text, patientId: $patient,
    sensitivity: $sensitivity) { status } }"""
RAISE_ACTION_ITEM = """mutation($huddle: ID!, $title: String!, $patient: ID,
  $discipline: Discipline, $assignee: ID, $dueDate: Date) {
  raiseActionItem(huddleId: $huddle, title: $title, patientId: $patient,
    discipline: $discipline, assigneeId: $assignee, dueDate: $dueDate) { status } }"""
ADD_MONITORING = """mutation($plan: ID!, $measure: String!, $every: Int!, $unit: String!,
  $low: Float, $high: Float, $criticalHigh: Float, $discipline: Discipline!) {
  addMonitoring(planId: $plan, measureCode: $measure, everyDays: $every, unit: $unit, low: $low,
    high: $high, criticalHigh: $criticalHigh, responsibleDiscipline: $discipline) { version } }"""
SET_GOAL_TARGET = """mutation($plan: ID!, $goal: ID!, $measure: String!, $comparator: Comparator!,
  $value: Float!, $unit: String!) {
  setGoalTarget(planId: $plan, goalId: $goal, measureCode: $measure, comparator: $comparator,
    value: $value, unit: $unit) { version } }"""
RECORD_OBSERVATION = """mutation($patient: ID!, $measure: String!, $value: Float!,
  $unit: String!, $at: DateTime!) {
  recordObservation(patientId: $patient, measureCode: $measure, value: $value, unit: $unit,
    at: $at, source: PATIENT_REPORTED) { id } }"""
BOARD = """query($team: ID!) { board(teamId: $team) {
  columns { tasks { id source signalCount } } } }"""

# What the board ends up with: a task per intervention, the review's, the action items,
# and one signal task carrying the week's readings out of range.
BOARD_TASKS = len(INTERVENTIONS) + 1 + len(s.ACTION_ITEMS) + 1


async def seed(base_url: str, *, secret: str, today: date | None = None) -> Demo:
    """Seed a fresh demo team on the API at `base_url`, its tokens signed with `secret`.

    `today` is the clinic's date the content is dated from (default: this machine's).
    DemoError says which step failed; a run that stops part-way leaves a partial team
    behind, which a new run does not reuse.
    """
    base = base_url_of(base_url)
    suffix = secrets.token_hex(3)  # fresh user ids per run: runs never share a team member
    try:
        members = {
            p.key: Member(
                user_id=f"demo-{suffix}-{p.key}",
                name=p.name,
                discipline=p.discipline.value,
                lead=p is s.PHYSICIAN,
                token=mint_token(
                    secret=secret,
                    sub=f"demo-{suffix}-{p.key}",
                    name=p.name,
                    ttl_seconds=TOKEN_TTL_S,
                ),
                sees_genetic=p.discipline in s.CONSENT_DISCIPLINES,
            )
            for p in s.TEAM
        }
    except ValueError as exc:  # too short a secret
        raise DemoError(f"cannot sign the demo's tokens: {exc}") from exc
    async with session() as http:
        api = Api(http, base)
        await api.check_health()
        seeding = _Seeding(api, members, today or date.today())
        try:
            return await seeding.run()
        except DemoError as exc:
            if seeding.team_id is None:
                raise
            raise DemoError(
                f"{exc} (the demo stopped part-way on team {seeding.team_id}; "
                "a new run starts a fresh team)"
            ) from exc


class _Seeding:
    def __init__(self, api: Api, members: dict[str, Member], today: date) -> None:
        self.api = api
        self.members = members
        self.today = today
        self.team_id: str | None = None

    def _token(self, person: s.Person) -> str:
        return self.members[person.key].token

    def _in(self, days: int) -> str:
        return (self.today + timedelta(days=days)).isoformat()

    async def _as(
        self, person: s.Person, step: str, query: str, **variables: Any
    ) -> dict[str, Any]:
        return await self.api.call(step, self._token(person), query, variables)

    async def run(self) -> Demo:
        lead = s.PHYSICIAN
        data = await self._as(lead, "create the team", CREATE_TEAM, name=s.TEAM_NAME)
        team_id = self.team_id = str(data["createTeam"]["id"])
        # The creator leads the team but holds no discipline until given one.
        for person in s.TEAM:
            await self._as(
                lead,
                f"give {person.name} the {person.discipline.value} role",
                ASSIGN_ROLE,
                team=team_id,
                user=self.members[person.key].user_id,
                name=person.name,
                discipline=person.discipline.value,
                lead=person is lead,
            )
        data = await self._as(
            lead,
            "enroll the patient",
            ENROLL,
            team=team_id,
            mrn=f"{s.MRN_PREFIX}{secrets.randbelow(900_000) + 100_000}",
            name=s.PATIENT_NAME,
            birthDate=s.birth_date(self.today).isoformat(),
        )
        patient_id = str(data["enrollPatient"]["id"])
        await self._as(
            s.CONSENT_BY,
            "record the patient's consent to share genetic results",
            GRANT_CONSENT,
            patient=patient_id,
            categories=[c.value for c in s.CONSENT_CATEGORIES],
            purposes=[p.value for p in s.CONSENT_PURPOSES],
            disciplines=[d.value for d in s.CONSENT_DISCIPLINES],
            evidence=s.CONSENT_EVIDENCE,
        )
        plan_id = await self._plan(patient_id)
        huddle_id = await self._huddle(team_id, patient_id)
        await self._as(
            lead,
            "review the care plan",
            REVIEW,
            plan=plan_id,
            summary=s.REVIEW_SUMMARY,
            next=self._in(s.REVIEW_IN_DAYS),
        )
        await self._board_caught_up(team_id)
        return Demo(
            base_url=self.api.base_url,
            team_id=team_id,
            patient_id=patient_id,
            plan_id=plan_id,
            huddle_id=huddle_id,
            members=tuple(self.members[p.key] for p in s.TEAM),
        )

    async def _plan(self, patient_id: str) -> str:
        lead = s.PHYSICIAN
        data = await self._as(
            lead, "start the care plan", CREATE_PLAN, patient=patient_id, title=s.PLAN_TITLE
        )
        plan_id = str(data["createCarePlan"]["id"])
        goal_ids = []
        for n, goal in enumerate(s.GOALS, 1):
            data = await self._as(
                lead,
                f"add goal {n} of {len(s.GOALS)}",
                ADD_GOAL,
                plan=plan_id,
                description=goal.description,
                target=goal.target,
                dueDate=self._in(goal.due_in_days),
            )
            goal_ids.append(str(data["addGoal"]["goals"][-1]["id"]))
        for n, item in enumerate(INTERVENTIONS, 1):
            await self._as(
                item.responsible,
                f"add intervention {n} of {len(INTERVENTIONS)} "
                f"({item.responsible.discipline.value}, {item.kind.value})",
                ADD_INTERVENTION,
                plan=plan_id,
                kind=item.kind.value,
                tier=item.tier.value,
                title=item.title,
                detail=item.detail,
                discipline=item.responsible.discipline.value,
                sensitivity=[t.value for t in item.sensitivity],
                dueDate=self._in(item.due_in_days),
            )
        await self._as(
            lead,
            "activate the care plan",
            SET_PLAN_STATUS,
            plan=plan_id,
            status=PlanStatus.ACTIVE.value,
        )
        for n, goal_id in enumerate(goal_ids, 1):
            await self._as(
                lead,
                f"start work on goal {n}",
                SET_GOAL_STATUS,
                plan=plan_id,
                goal=goal_id,
                status=GoalStatus.IN_PROGRESS.value,
            )
        await self._monitoring(plan_id, patient_id, goal_ids)
        return plan_id

    async def _monitoring(self, plan_id: str, patient_id: str, goal_ids: list[str]) -> None:
        """Weekly glucose monitoring for the nurse, the HbA1c goal made measurable, and a
        week of the patient's home readings, two of them high."""
        lead, m, t = s.PHYSICIAN, s.GLUCOSE_MONITORING, s.HBA1C_TARGET
        await self._as(
            lead,
            "monitor glucose weekly",
            ADD_MONITORING,
            plan=plan_id,
            measure=m.measure_code,
            every=m.every_days,
            unit=m.unit,
            low=m.low,
            high=m.high,
            criticalHigh=m.critical_high,
            discipline=m.responsible.discipline.value,
        )
        await self._as(
            lead,
            "make the HbA1c goal measurable",
            SET_GOAL_TARGET,
            plan=plan_id,
            goal=goal_ids[t.goal_index],
            measure=t.measure_code,
            comparator=t.comparator,
            value=t.value,
            unit=t.unit,
        )
        midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        now = datetime.now(UTC)
        for n, (days_ago, hour, value) in enumerate(s.GLUCOSE_WEEK, 1):
            at = min(midnight - timedelta(days=days_ago) + timedelta(hours=hour), now)
            await self._as(
                s.READINGS_BY,
                f"record glucose reading {n} of {len(s.GLUCOSE_WEEK)}",
                RECORD_OBSERVATION,
                patient=patient_id,
                measure=m.measure_code,
                value=value,
                unit=m.unit,
                at=at.isoformat(),
            )

    async def _huddle(self, team_id: str, patient_id: str) -> str:
        chair = s.HUDDLE_CHAIR
        held = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(
            minutes=s.HUDDLE_MINUTES_AGO
        )
        data = await self._as(
            chair, "schedule the huddle", SCHEDULE_HUDDLE, team=team_id, at=held.isoformat()
        )
        huddle_id = str(data["scheduleHuddle"]["id"])
        await self._as(chair, "open the huddle", OPEN_HUDDLE, huddle=huddle_id)
        for n, note in enumerate(s.NOTES, 1):
            await self._as(
                note.author,
                f"record huddle note {n} of {len(s.NOTES)}",
                RECORD_NOTE,
                huddle=huddle_id,
                text=note.text,
                patient=patient_id,
                sensitivity=[t.value for t in note.sensitivity],
            )
        for n, item in enumerate(s.ACTION_ITEMS, 1):
            await self._as(
                chair,
                f"raise action item {n} of {len(s.ACTION_ITEMS)}",
                RAISE_ACTION_ITEM,
                huddle=huddle_id,
                title=item.title,
                patient=patient_id,
                discipline=item.assignee.discipline.value,
                assignee=self.members[item.assignee.key].user_id,
                dueDate=self._in(item.due_in_days),
            )
        await self._as(chair, "close the huddle", CLOSE_HUDDLE, huddle=huddle_id)
        return huddle_id

    async def _board_caught_up(self, team_id: str) -> None:
        """Wait until the board shows every task, the signal task carrying both high
        readings, so the printed URLs open on a full board."""
        step = (
            f"wait for the board to show its {BOARD_TASKS} tasks, one of them a signal "
            f"carrying {s.HIGH_READINGS} readings"
        )
        deadline = time.monotonic() + BOARD_WAIT_S
        while True:
            data = await self._as(s.PHYSICIAN, step, BOARD, team=team_id)
            tasks = [t for column in data["board"]["columns"] for t in column["tasks"]]
            signalled = sum(t["signalCount"] for t in tasks if t["source"] == "SIGNAL")
            if len(tasks) >= BOARD_TASKS and signalled >= s.HIGH_READINGS:
                return
            if time.monotonic() > deadline:
                raise DemoError(
                    f"{step}: it shows {len(tasks)} tasks and {signalled} signalled readings "
                    f"after {BOARD_WAIT_S:.0f} s; is the worker running? (see the `make up` "
                    "output)"
                )
            await asyncio.sleep(0.3)
