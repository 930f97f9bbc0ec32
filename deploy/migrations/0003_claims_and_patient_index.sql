-- Values that must be unique across streams (an MRN on its team), claimed in the same
-- transaction as the events that introduce them. Claims, like events, are never undone.
CREATE TABLE unique_claims (
    scope       text        NOT NULL,
    key         text        NOT NULL,
    stream_id   text        NOT NULL,
    claimed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);

CREATE TRIGGER unique_claims_append_only
    BEFORE UPDATE OR DELETE ON unique_claims
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();
CREATE TRIGGER unique_claims_no_truncate
    BEFORE TRUNCATE ON unique_claims
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();

-- A patient's care plans and consents are found by the patient's id and the event type
-- that starts their streams.
CREATE INDEX events_patient_type ON events (patient_id, type, position)
    WHERE patient_id IS NOT NULL;
