-- The audit outbox: access records committed in PostgreSQL, in the request's path, before
-- the patient data they cover leaves the API. A relay produces them to care.audit (at
-- least once, sending again what the log has not taken after a while); the audit writer
-- deletes a record's row in the same transaction that appends it to the log, so a record
-- is always in the outbox, in the log, or both while in flight (never neither).
--
-- `value` is the encoded AccessRecorded in plaintext (ids, role, purpose, outcome, reason
-- text; no names of patients, no MRNs, no note text), as care.audit carries it; rows stay
-- for seconds while the pipeline runs. Who may do what: the API INSERTs, the relay SELECTs
-- and UPDATEs sent_at, the writer (carecoord_audit) SELECTs and DELETEs.

CREATE TABLE audit_outbox (
    record_id  text        PRIMARY KEY,
    -- When the access happened (from the record).
    at         timestamptz NOT NULL,
    -- The care.audit message key (patient id, else actor id) and value.
    key        bytea       NOT NULL,
    value      bytea       NOT NULL,
    queued_at  timestamptz NOT NULL DEFAULT now(),
    -- When the relay last claimed the row to produce it (NULL: not yet, or its produce
    -- failed), how many times it did, and when the row is due again if the log has not
    -- taken it by then: the resend interval, doubled at each send up to eight times it, so
    -- a long writer outage does not have the relay resend a growing backlog every interval.
    sent_at    timestamptz,
    attempts   integer     NOT NULL DEFAULT 0,
    resend_at  timestamptz
);

-- The relay's claim: rows due (never sent, or due again longest ago) first, a range scan
-- that passes no row sent recently, however many wait for a paused writer.
CREATE INDEX audit_outbox_due ON audit_outbox ((coalesce(resend_at, '-infinity')), queued_at);

DO $$
BEGIN
    BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'carecoord_audit') THEN
            CREATE ROLE carecoord_audit NOLOGIN;
        END IF;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN
        NULL;
    END;
    -- The writer removes what it appended, in the append's transaction (as carecoord_audit).
    EXECUTE 'GRANT SELECT, DELETE ON audit_outbox TO carecoord_audit';
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'could not grant carecoord_audit SELECT and DELETE on audit_outbox (%); '
        'grant them, or set CARECOORD_AUDIT_DB_ROLE=''''', SQLERRM;
END
$$;
REVOKE UPDATE, DELETE, TRUNCATE ON audit_outbox FROM PUBLIC;
