-- Projections: for each projection and team, the highest event-store position applied.
-- It changes in the same transaction as the read model, so a redelivered message (even
-- after the broker lost its log and Kafka offsets restarted at zero) changes nothing.
CREATE TABLE projection_positions (
    projection  text        NOT NULL,
    team_id     text        NOT NULL,
    position    bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, team_id)
);

-- A team's activity: how many events changed it and when it last changed.
CREATE TABLE team_activity (
    team_id          text        PRIMARY KEY,
    events_applied   bigint      NOT NULL,
    last_position    bigint      NOT NULL,
    last_event_type  text        NOT NULL,
    last_event_at    timestamptz NOT NULL
);
