"""GraphQL documents of the public API, shared by the integration and end-to-end tests."""

from __future__ import annotations

TEAM_FIELDS = "id name version members { userId name disciplines lead }"
PATIENT_FIELDS = "id teamId mrn name birthDate"
PLAN_FIELDS = """id patientId teamId title status nextReviewDate lastReviewSummary version
  goals { id description target dueDate status }
  interventions { id kind tier title detail responsibleDiscipline sensitivity active redacted
                  discontinuedReason }"""
HUDDLE_FIELDS = """id teamId scheduledFor status
  notes { id authorId patientId text redacted at }
  actionItems { id teamId patientId title status assigneeId discipline dueDate overdue
                sensitivity redacted updatedAt }"""
CONSENT_FIELDS = """id patientId categories purposes disciplines validUntil active
grantedBy evidence revokedBy revocationEvidence"""

CREATE_TEAM = f"mutation($name: String!) {{ createTeam(name: $name) {{ {TEAM_FIELDS} }} }}"
ASSIGN_ROLE = f"""mutation($teamId: ID!, $userId: ID!, $name: String!, $discipline: Discipline!,
  $lead: Boolean = false) {{
  assignRole(teamId: $teamId, userId: $userId, name: $name, discipline: $discipline,
             lead: $lead) {{ {TEAM_FIELDS} }} }}"""
REVOKE_ROLE = f"""mutation($teamId: ID!, $userId: ID!, $discipline: Discipline!) {{
  revokeRole(teamId: $teamId, userId: $userId, discipline: $discipline) {{ {TEAM_FIELDS} }} }}"""
REMOVE_MEMBER = f"""mutation($teamId: ID!, $userId: ID!) {{
  removeMember(teamId: $teamId, userId: $userId) {{ {TEAM_FIELDS} }} }}"""
TEAM = f"query($id: ID!) {{ team(id: $id) {{ {TEAM_FIELDS} }} }}"

ENROLL = f"""mutation($teamId: ID!, $mrn: String!, $name: String!, $birthDate: Date!) {{
  enrollPatient(teamId: $teamId, mrn: $mrn, name: $name, birthDate: $birthDate) {{
    {PATIENT_FIELDS} }} }}"""
PATIENT = f"query($id: ID!) {{ patient(id: $id) {{ {PATIENT_FIELDS} }} }}"

CREATE_PLAN = f"""mutation($patientId: ID!, $title: String!) {{
  createCarePlan(patientId: $patientId, title: $title) {{ {PLAN_FIELDS} }} }}"""
ADD_GOAL = f"""mutation($planId: ID!, $description: String!, $target: String, $dueDate: Date,
  $expectedVersion: Int) {{
  addGoal(planId: $planId, description: $description, target: $target, dueDate: $dueDate,
          expectedVersion: $expectedVersion) {{ {PLAN_FIELDS} }} }}"""
SET_GOAL_STATUS = f"""mutation($planId: ID!, $goalId: ID!, $status: GoalStatus!,
  $expectedVersion: Int) {{
  setGoalStatus(planId: $planId, goalId: $goalId, status: $status,
                expectedVersion: $expectedVersion) {{ {PLAN_FIELDS} }} }}"""
ADD_INTERVENTION = f"""mutation($planId: ID!, $kind: InterventionKind!, $tier: Tier!,
  $title: String!, $detail: String, $discipline: Discipline!, $sensitivity: [Sensitivity!],
  $dueDate: Date, $expectedVersion: Int) {{
  addIntervention(planId: $planId, kind: $kind, tier: $tier, title: $title, detail: $detail,
                  responsibleDiscipline: $discipline, sensitivity: $sensitivity,
                  dueDate: $dueDate, expectedVersion: $expectedVersion) {{ {PLAN_FIELDS} }} }}"""
DISCONTINUE = f"""mutation($planId: ID!, $interventionId: ID!, $reason: String!,
  $expectedVersion: Int) {{
  discontinueIntervention(planId: $planId, interventionId: $interventionId, reason: $reason,
                          expectedVersion: $expectedVersion) {{ {PLAN_FIELDS} }} }}"""
SET_PLAN_STATUS = f"""mutation($planId: ID!, $status: PlanStatus!, $expectedVersion: Int) {{
  setPlanStatus(planId: $planId, status: $status, expectedVersion: $expectedVersion) {{
    {PLAN_FIELDS} }} }}"""
REVIEW = f"""mutation($planId: ID!, $summary: String!, $next: Date!, $expectedVersion: Int) {{
  reviewCarePlan(planId: $planId, summary: $summary, nextReviewDate: $next,
                 expectedVersion: $expectedVersion) {{ {PLAN_FIELDS} }} }}"""
CARE_PLAN = f"query($id: ID!) {{ carePlan(id: $id) {{ {PLAN_FIELDS} }} }}"
CARE_PLANS = f"query($patientId: ID!) {{ carePlans(patientId: $patientId) {{ {PLAN_FIELDS} }} }}"

SCHEDULE = f"""mutation($teamId: ID!, $at: DateTime!) {{
  scheduleHuddle(teamId: $teamId, at: $at) {{ {HUDDLE_FIELDS} }} }}"""
OPEN_HUDDLE = f"mutation($id: ID!) {{ openHuddle(huddleId: $id) {{ {HUDDLE_FIELDS} }} }}"
CLOSE_HUDDLE = f"mutation($id: ID!) {{ closeHuddle(huddleId: $id) {{ {HUDDLE_FIELDS} }} }}"
NOTE = f"""mutation($id: ID!, $text: String!, $patientId: ID, $sensitivity: [Sensitivity!]) {{
  recordHuddleNote(huddleId: $id, text: $text, patientId: $patientId,
                   sensitivity: $sensitivity) {{ {HUDDLE_FIELDS} }} }}"""
ACTION_ITEM = f"""mutation($id: ID!, $title: String!, $patientId: ID, $discipline: Discipline,
  $assigneeId: ID, $dueDate: Date) {{
  raiseActionItem(huddleId: $id, title: $title, patientId: $patientId, discipline: $discipline,
                  assigneeId: $assigneeId, dueDate: $dueDate) {{ {HUDDLE_FIELDS} }} }}"""
HUDDLE = f"query($id: ID!) {{ huddle(id: $id) {{ {HUDDLE_FIELDS} }} }}"

GRANT = f"""mutation($patientId: ID!, $categories: [Sensitivity!]!, $purposes: [Purpose!]!,
  $disciplines: [Discipline!]!, $validUntil: DateTime, $evidence: String) {{
  grantConsent(patientId: $patientId, categories: $categories, purposes: $purposes,
               disciplines: $disciplines, validUntil: $validUntil, evidence: $evidence) {{
    {CONSENT_FIELDS} }} }}"""
REVOKE_CONSENT = f"""mutation($id: ID!, $evidence: String) {{
  revokeConsent(consentId: $id, evidence: $evidence) {{ {CONSENT_FIELDS} }} }}"""
CONSENTS = f"query($patientId: ID!) {{ consents(patientId: $patientId) {{ {CONSENT_FIELDS} }} }}"

TASK_FIELDS = """id teamId patientId planId title status assigneeId discipline dueDate overdue
sensitivity redacted updatedAt blockedReason source"""
CREATE_TASK = f"""mutation($teamId: ID!, $title: String!, $patientId: ID, $discipline: Discipline,
  $assigneeId: ID, $dueDate: Date) {{
  createTask(teamId: $teamId, title: $title, patientId: $patientId, discipline: $discipline,
    assigneeId: $assigneeId, dueDate: $dueDate) {{ {TASK_FIELDS} }} }}"""
MOVE_TASK = f"""mutation($taskId: ID!, $status: TaskStatus!, $reason: String) {{
  moveTask(taskId: $taskId, status: $status, reason: $reason) {{ {TASK_FIELDS} }} }}"""
ASSIGN_TASK = f"""mutation($taskId: ID!, $assigneeId: ID!) {{
  assignTask(taskId: $taskId, assigneeId: $assigneeId) {{ {TASK_FIELDS} }} }}"""
BOARD = f"""query($teamId: ID!) {{
  board(teamId: $teamId) {{ teamId asOf columns {{ status tasks {{ {TASK_FIELDS} }} }} }} }}"""
AGENDA = f"""query($teamId: ID!) {{ huddleAgenda(teamId: $teamId) {{ teamId since
  overdueTasks {{ {TASK_FIELDS} }} blockedTasks {{ {TASK_FIELDS} }}
  plansDueForReview {{ id nextReviewDate status }} }} }}"""
BOARD_CHANGED = f"""subscription($teamId: ID!) {{
  boardChanged(teamId: $teamId) {{ teamId change task {{ {TASK_FIELDS} }} }} }}"""
HUDDLE_CHANGED = """subscription($huddleId: ID!) {
  huddleChanged(huddleId: $huddleId) { id status notes { id } actionItems { id status } } }"""

AUDIT_ENTRY_FIELDS = """seq chain at actorId actorName patientId action resource purpose outcome
  reason sensitivity clientAddress claimedSubject refusedSignIns"""
AUDIT_TRAIL = f"""query($filter: AuditFilter!, $first: Int, $after: String) {{
  auditTrail(filter: $filter, first: $first, after: $after) {{
    entries {{ {AUDIT_ENTRY_FIELDS} }} nextCursor }} }}"""
ACCESS_REPORT = f"""query($patientId: ID!, $from: DateTime, $to: DateTime) {{
  accessReport(patientId: $patientId, from: $from, to: $to) {{ {AUDIT_ENTRY_FIELDS} }} }}"""
DISCLOSURE_REPORT = f"""query($patientId: ID!, $from: DateTime, $to: DateTime) {{
  disclosureReport(patientId: $patientId, from: $from, to: $to) {{ {AUDIT_ENTRY_FIELDS} }} }}"""
VERIFY_AUDIT_LOG = "query { verifyAuditLog { ok entriesChecked chains firstBadSeq problem } }"
BREAK_GLASS_QUEUE = f"query {{ breakGlassQueue {{ {AUDIT_ENTRY_FIELDS} }} }}"
MARK_REVIEWED = f"""mutation($seq: ID!, $disposition: String!) {{
  markBreakGlassReviewed(seq: $seq, disposition: $disposition) {{ {AUDIT_ENTRY_FIELDS}
    review {{ reviewerId disposition at }} }} }}"""

# A pharmacogenomic result, the GENETIC item the policy tests turn on.
GENETIC_RESULT = "Warfarin dose per CYP2C9 result"


def genetic_result(plan_id: str) -> dict[str, object]:
    """ADD_INTERVENTION's variables for the GENETIC-tagged result on this plan."""
    return {
        "planId": plan_id,
        "kind": "MEDICATION",
        "tier": "FIRST_LINE",
        "title": GENETIC_RESULT,
        "detail": "CYP2C9 *2/*3: start at 2 mg daily",
        "discipline": "PHARMACIST",
        "sensitivity": ["GENETIC"],
    }
