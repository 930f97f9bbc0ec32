-- Archived months of the audit log. Archiving (`carecoord audit archive`, run as the
-- owner) exports a month's entries with their proofs, records here which sequences of
-- each chain left and the signed checkpoint they were proved against, and detaches the
-- month's partition (renamed audit_archived_yYYYYmMM, kept until the owner drops it).
-- The Merkle tree and every checkpoint stay, so proofs and verification go on covering
-- the archived entries: verify accepts a missing entry only where this table says so.
CREATE TABLE audit_archives (
    month            date        NOT NULL,
    chain            integer     NOT NULL,
    -- The archived sequences as inclusive runs: first_seqs[i] .. last_seqs[i].
    first_seqs       bigint[]    NOT NULL,
    last_seqs        bigint[]    NOT NULL,
    entries          bigint      NOT NULL,
    checkpoint_size  bigint      NOT NULL,
    checkpoint       text        NOT NULL,
    manifest_sha256  text        NOT NULL,
    archived_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (month, chain),
    CHECK (cardinality(first_seqs) = cardinality(last_seqs))
);

CREATE TRIGGER audit_archives_append_only BEFORE UPDATE OR DELETE ON audit_archives
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_archives_no_truncate BEFORE TRUNCATE ON audit_archives
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

REVOKE ALL ON audit_archives FROM PUBLIC;
DO $$
BEGIN
    EXECUTE 'GRANT SELECT ON audit_archives TO carecoord_audit';
    -- The services read it (verification); only the owner archives.
    EXECUTE 'REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON audit_archives FROM carecoord_app';
EXCEPTION WHEN undefined_object OR insufficient_privilege THEN
    RAISE WARNING 'could not grant SELECT on audit_archives to carecoord_audit (%)', SQLERRM;
END
$$;
