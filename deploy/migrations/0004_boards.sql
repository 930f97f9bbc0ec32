-- Per-team boards, fed by the board projector from care.events. Each batch of changes
-- commits with the projection's position per team (projection_positions), so a
-- redelivered event changes nothing. `carecoord rebuild` drops and refills these tables.

-- A card on a team's board: the latest state of one task.
CREATE TABLE board_tasks (
    task_id            text        PRIMARY KEY,
    team_id            text        NOT NULL,
    title              text        NOT NULL,
    source             text        NOT NULL,
    status             text        NOT NULL,
    patient_id         text,
    plan_id            text,
    intervention_id    text,
    huddle_id          text,
    discipline         text,
    assignee_id        text,
    due_date           date,
    sensitivity        text[]      NOT NULL DEFAULT '{}',
    blocked_reason     text,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    -- Set by the overdue timer once it has told subscribers; not part of the task.
    overdue_announced  boolean     NOT NULL DEFAULT false
);
CREATE INDEX board_tasks_by_team ON board_tasks (team_id, status, due_date);
-- The board shows done and cancelled tasks of the last days only, not a team's history.
CREATE INDEX board_tasks_closed_lately ON board_tasks (team_id, updated_at)
    WHERE status IN ('DONE', 'CANCELLED');
-- What the overdue timer scans: open tasks with a due date it has not announced yet.
CREATE INDEX board_tasks_overdue_watch ON board_tasks (due_date)
    WHERE status IN ('TODO', 'IN_PROGRESS', 'BLOCKED')
      AND due_date IS NOT NULL AND NOT overdue_announced;

-- When each care plan is next due for review (the huddle agenda's "plans due").
CREATE TABLE board_plans (
    plan_id           text        PRIMARY KEY,
    team_id           text        NOT NULL,
    patient_id        text        NOT NULL,
    status            text        NOT NULL,
    next_review_date  date,
    reviewed_at       timestamptz
);
CREATE INDEX board_plans_review_due ON board_plans (team_id, next_review_date)
    WHERE next_review_date IS NOT NULL;

-- Each huddle's status; the agenda runs from the team's last closed huddle.
CREATE TABLE board_huddles (
    huddle_id      text        PRIMARY KEY,
    team_id        text        NOT NULL,
    status         text        NOT NULL,
    scheduled_for  timestamptz NOT NULL,
    closed_at      timestamptz
);
CREATE INDEX board_huddles_closed ON board_huddles (team_id, closed_at DESC)
    WHERE closed_at IS NOT NULL;

-- Board changes waiting to be published to care.board-updates. Written in the same
-- transaction as the board, deleted once Kafka acknowledged them: a worker that dies in
-- between publishes them when it comes back (subscribers drop repeats by seq).
CREATE TABLE board_outbox (
    seq         bigserial   PRIMARY KEY,
    team_id     text        NOT NULL,
    body        jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
