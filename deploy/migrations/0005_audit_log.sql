-- The audit log: one row per access record, encrypted (AES-256-GCM, key id beside it),
-- hash-chained per partition of care.audit ("chain"), with signed checkpoints of each
-- chain head. Both tables are insert-only: a trigger refuses UPDATE, DELETE and
-- TRUNCATE, and the role the audit writer works as (carecoord_audit) may only INSERT
-- and SELECT. Entries are partitioned by the month of the access, so six years can be
-- kept and old months detached for archiving by the owner.

CREATE TABLE audit_entries (
    -- When the access happened (from the record); the partition key.
    at           timestamptz NOT NULL,
    chain        integer     NOT NULL,
    seq          bigint      NOT NULL,
    record_id    text        NOT NULL,
    key_id       text        NOT NULL,
    -- 12-byte nonce, then the AES-256-GCM ciphertext and tag of the record's JSON.
    ciphertext   bytea       NOT NULL,
    prev_hash    bytea       NOT NULL,
    -- SHA-256 over (chain, seq, prev_hash, key_id, ciphertext).
    hash         bytea       NOT NULL,
    -- Blind indexes (HMAC-SHA-256 under their own key) of the patient and actor ids,
    -- so filters need not decrypt everything. Verification checks they match the record.
    patient_ix   bytea,
    actor_ix     bytea       NOT NULL,
    -- Copies of the record's non-identifying fields, for filters; verified likewise.
    outcome      text        NOT NULL,
    purpose      text        NOT NULL,
    sensitivity  text[]      NOT NULL DEFAULT '{}',
    written_at   timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (at);

-- A redelivered record is found by its id and not appended twice.
CREATE UNIQUE INDEX audit_entries_record ON audit_entries (record_id, at);
CREATE INDEX audit_entries_chain ON audit_entries (chain, seq);
CREATE INDEX audit_entries_time ON audit_entries (at, chain, seq);
CREATE INDEX audit_entries_patient ON audit_entries (patient_ix, at) WHERE patient_ix IS NOT NULL;
CREATE INDEX audit_entries_actor ON audit_entries (actor_ix, at);
CREATE INDEX audit_entries_break_glass ON audit_entries (at) WHERE outcome = 'BREAK_GLASS';

-- A signed statement of a chain's head: (chain, seq, hash) at signed_at, Ed25519, over
-- the digest of the chain's previous checkpoint too, so none can be removed unnoticed.
CREATE TABLE audit_checkpoints (
    chain           integer     NOT NULL,
    seq             bigint      NOT NULL,
    hash            bytea       NOT NULL,
    signed_at       timestamptz NOT NULL,
    signing_key_id  text        NOT NULL,
    signature       bytea       NOT NULL,
    prev_digest     bytea       NOT NULL,
    PRIMARY KEY (chain, seq)
);

CREATE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only: % on % is refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_entries_append_only BEFORE UPDATE OR DELETE ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_entries_no_truncate BEFORE TRUNCATE ON audit_entries
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

-- The month partition holding `moment`, created when missing. It runs as the owner
-- (SECURITY DEFINER) so the writer's role needs no right to create tables. Row triggers
-- are inherited by partitions; a TRUNCATE trigger is not, so each partition gets one.
CREATE FUNCTION audit_ensure_partition(moment timestamptz) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    first_day date := date_trunc('month', moment AT TIME ZONE 'UTC')::date;
    name text := format('audit_entries_y%sm%s', to_char(first_day, 'YYYY'), to_char(first_day, 'MM'));
BEGIN
    IF moment < '2000-01-01' OR moment > now() + interval '1 year' THEN
        RAISE EXCEPTION 'no audit partition for %: access times are from 2000 to a year ahead', moment
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF to_regclass(name) IS NULL THEN
        PERFORM pg_advisory_xact_lock(7206351005);
        IF to_regclass(name) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF audit_entries FOR VALUES FROM (%L) TO (%L)',
                name,
                (first_day::timestamp AT TIME ZONE 'UTC'),
                ((first_day + interval '1 month')::timestamp AT TIME ZONE 'UTC')
            );
            EXECUTE format(
                'CREATE TRIGGER audit_partition_no_truncate BEFORE TRUNCATE ON %I '
                'FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()',
                name
            );
        END IF;
    END IF;
    RETURN name;
END
$$;

REVOKE EXECUTE ON FUNCTION audit_ensure_partition(timestamptz) FROM PUBLIC;

SELECT audit_ensure_partition(now());
SELECT audit_ensure_partition(now() + interval '1 month');

-- The role the audit writer switches to for its transactions (SET LOCAL ROLE): INSERT
-- and SELECT only. Roles belong to the whole cluster, so another database may have
-- made it already; an owner without the right to create roles gets a warning, and the
-- writer then runs as its login role (CARECOORD_AUDIT_DB_ROLE='' says so).
DO $$
BEGIN
    BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'carecoord_audit') THEN
            CREATE ROLE carecoord_audit NOLOGIN;
        END IF;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN
        NULL;
    END;
    EXECUTE 'GRANT SELECT, INSERT ON audit_entries, audit_checkpoints TO carecoord_audit';
    EXECUTE 'GRANT EXECUTE ON FUNCTION audit_ensure_partition(timestamptz) TO carecoord_audit';
    EXECUTE format('GRANT carecoord_audit TO %I', current_user);
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'could not set up the role carecoord_audit (%); create it with INSERT '
        'and SELECT on audit_entries and audit_checkpoints, or set CARECOORD_AUDIT_DB_ROLE=''''',
        SQLERRM;
END
$$;
REVOKE UPDATE, DELETE, TRUNCATE ON audit_entries, audit_checkpoints FROM PUBLIC;
