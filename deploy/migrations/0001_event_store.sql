-- The event store: the source of truth. Rows are only ever inserted.
CREATE TABLE events (
    position        bigint      PRIMARY KEY,          -- global, gap-free, in commit order
    stream_id       text        NOT NULL,
    stream_version  integer     NOT NULL CHECK (stream_version >= 1),
    event_id        uuid        NOT NULL UNIQUE,
    type            text        NOT NULL,
    schema_version  integer     NOT NULL CHECK (schema_version >= 1),
    team_id         text        NOT NULL,
    patient_id      text,
    actor_id        text        NOT NULL,
    occurred_at     timestamptz NOT NULL,
    correlation_id  text        NOT NULL,
    causation_id    text,
    payload         jsonb       NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_stream_version_unique UNIQUE (stream_id, stream_version)
);

CREATE INDEX events_team_position ON events (team_id, position);

-- Events are never changed: refuse UPDATE and DELETE whoever asks.
CREATE FUNCTION events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();

-- How far the outbox relay has had Kafka acknowledge the store, per topic.
CREATE TABLE relay_checkpoints (
    topic       text        PRIMARY KEY,
    position    bigint      NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Per partition, what Kafka acknowledged last: the highest offset, and the lowest offset
-- of the last acknowledged batch. A broker whose log ends below that batch has lost its
-- data (the embedded broker keeps memory only) and is refilled from the store. (The
-- batch's first offset is compared, not the last, because the embedded broker reports a
-- partition's end as one past the first offset of its last record batch.)
CREATE TABLE relay_partition_offsets (
    topic        text    NOT NULL,
    partition    integer NOT NULL,
    last_offset  bigint  NOT NULL,
    batch_floor  bigint  NOT NULL,
    PRIMARY KEY (topic, partition)
);
