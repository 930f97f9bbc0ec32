-- Care signals: the read model the signal processor keeps (projection "signals", tracked
-- by store position like the boards), the commands it still owes the write side, and the
-- board's new task fields (a signal task's count, urgency and escalation).

ALTER TABLE board_tasks
    ADD COLUMN signal_count  integer     NOT NULL DEFAULT 0,
    ADD COLUMN urgent_since  timestamptz,
    ADD COLUMN escalated_at  timestamptz;
-- What the escalation timer scans: urgent tasks still to do and not escalated.
CREATE INDEX board_tasks_escalation_watch ON board_tasks (urgent_since)
    WHERE urgent_since IS NOT NULL AND status = 'TODO' AND escalated_at IS NULL;

-- Each care plan's status, as far as signals care: only an ACTIVE plan's monitoring signals.
CREATE TABLE signal_plans (
    plan_id       text        PRIMARY KEY,
    team_id       text        NOT NULL,
    patient_id    text        NOT NULL,
    status        text        NOT NULL,
    active_since  timestamptz
);
CREATE INDEX signal_plans_patient ON signal_plans (patient_id);

-- Each monitoring plan: thresholds in the unit the clinician gave, and what it signalled.
CREATE TABLE signal_watches (
    monitoring_id          text        PRIMARY KEY,
    plan_id                text        NOT NULL,
    team_id                text        NOT NULL,
    patient_id             text        NOT NULL,
    measure_code           text        NOT NULL,
    every_days             integer     NOT NULL,
    unit                   text        NOT NULL,
    low                    float8,
    high                   float8,
    critical_low           float8,
    critical_high          float8,
    discipline             text        NOT NULL,
    sensitivity            text[]      NOT NULL DEFAULT '{}',
    active                 boolean     NOT NULL,
    started_at             timestamptz NOT NULL,
    signal_task_id         text,
    signals                integer     NOT NULL DEFAULT 0,
    silence_signalled      timestamptz
);
CREATE INDEX signal_watches_patient ON signal_watches (patient_id, measure_code);
CREATE INDEX signal_watches_team ON signal_watches (team_id) WHERE active;

-- Each goal of a plan, with its measurable target once set (target in the goal's unit).
CREATE TABLE signal_goals (
    goal_id       text        PRIMARY KEY,
    plan_id       text        NOT NULL,
    team_id       text        NOT NULL,
    patient_id    text        NOT NULL,
    status        text        NOT NULL,
    due_date      date,
    measure_code  text,
    comparator    text,
    value         float8,
    high          float8,
    unit          text
);
CREATE INDEX signal_goals_patient ON signal_goals (patient_id, measure_code);
CREATE INDEX signal_goals_team ON signal_goals (team_id) WHERE measure_code IS NOT NULL;

-- The two latest readings (by when they were taken) of each measure of each patient, in
-- the measure's canonical unit: a plan's latest, a goal's trend.
CREATE TABLE signal_readings (
    patient_id               text        NOT NULL,
    measure_code             text        NOT NULL,
    team_id                  text        NOT NULL,
    latest_observation_id    text        NOT NULL,
    latest_value             float8      NOT NULL,
    latest_at                timestamptz NOT NULL,
    previous_observation_id  text,
    previous_value           float8,
    previous_at              timestamptz,
    PRIMARY KEY (patient_id, measure_code)
);

-- RaiseSignal commands the processor decided, written with the read model in one
-- transaction and sent to the write side after it (then deleted): a crash in between
-- sends them again, and the Signal aggregate ignores what it has already signalled.
CREATE TABLE signal_outbox (
    seq            bigserial   PRIMARY KEY,
    monitoring_id  text        NOT NULL,
    body           jsonb       NOT NULL,
    queued_at      timestamptz NOT NULL DEFAULT now()
);

GRANT SELECT, INSERT, UPDATE, DELETE ON signal_plans, signal_watches, signal_goals,
    signal_readings, signal_outbox TO carecoord_app;
