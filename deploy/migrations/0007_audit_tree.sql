-- The audit log as a transparency log: a Merkle tree per chain (RFC 9162 hashing, leaf
-- data = the entry's hash, leaf index = seq - 1), stored as its complete subtrees so an
-- inclusion or consistency proof is one indexed read of at most 2*log2(n) rows. Node
-- (level, idx) is the hash of leaves [idx * 2^level, (idx + 1) * 2^level); level 0 holds
-- the leaf hashes. The audit writer adds a chain's nodes in the transaction that appends
-- its entries (under the chain's lock); chains written before this migration get theirs
-- from the writer, once, the first time it touches them (built from the entries' hashes
-- with the same code that builds new ones). Insert-only, like the entries.

CREATE TABLE audit_tree (
    chain  integer  NOT NULL,
    level  smallint NOT NULL CHECK (level BETWEEN 0 AND 63),
    idx    bigint   NOT NULL CHECK (idx >= 0),
    hash   bytea    NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (chain, level, idx)
);

-- Checkpoints also carry the tree's root at their size and the C2SP signed note
-- (tlog-checkpoint: origin, size, root, signed by the audit signing key) that outsiders
-- check. NULL for checkpoints signed before the tree existed.
ALTER TABLE audit_checkpoints ADD COLUMN root bytea, ADD COLUMN note text;

CREATE TRIGGER audit_tree_append_only BEFORE UPDATE OR DELETE ON audit_tree
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_tree_no_truncate BEFORE TRUNCATE ON audit_tree
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

DO $$
BEGIN
    EXECUTE 'GRANT SELECT, INSERT ON audit_tree TO carecoord_audit';
EXCEPTION WHEN insufficient_privilege OR undefined_object THEN
    RAISE WARNING 'could not grant carecoord_audit INSERT and SELECT on audit_tree (%); '
        'grant them, or set CARECOORD_AUDIT_DB_ROLE=''''', SQLERRM;
END
$$;
REVOKE UPDATE, DELETE, TRUNCATE ON audit_tree FROM PUBLIC;
