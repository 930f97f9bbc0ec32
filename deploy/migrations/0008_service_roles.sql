-- Least privilege: the services log in as carecoord_app, a role that owns nothing. An
-- owner may disable a table's triggers, DETACH or DROP a partition and TRUNCATE whatever
-- was granted, so only the migrations (and archiving) run as the owner, the role running
-- this file; the services get rows to read and write, nothing more:
--   - the event store and the unique claims: SELECT, INSERT (never changed);
--   - tables whose name starts with audit_: SELECT, INSERT (the log is insert-only),
--     except audit_outbox, which the relay empties: SELECT, INSERT, UPDATE, DELETE;
--   - every other table (read models, projection and relay bookkeeping, the board
--     outbox): SELECT, INSERT, UPDATE, DELETE;
--   - schema_migrations: nothing; TRUNCATE: nowhere; sequences: USAGE;
--   - membership of carecoord_audit, so the audit writer's SET LOCAL ROLE works.
-- Partitions get nothing of their own: rows go in and out through their parent.
--
-- Tables made by later migrations: the owner's default privileges give carecoord_app
-- SELECT and INSERT on them (USAGE on sequences), the insert-only level of the audit
-- tables. A migration whose table the services update or delete from grants that
-- explicitly; the integration tests run the services as carecoord_app, so a forgotten
-- grant fails a test instead of widening anything. (Default privileges apply to what this
-- same owner creates; a later migration run by another role grants all it needs itself.)
--
-- The role is made here when missing (NOLOGIN: an operator gives it LOGIN and a password,
-- or grants it to a login role of their own; deploy/README.md). Roles belong to the whole
-- cluster, so another database may have made it already.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'carecoord_app') THEN
        BEGIN
            CREATE ROLE carecoord_app NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL;
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'the role carecoord_app does not exist and % may not create it', current_user
                    USING ERRCODE = 'insufficient_privilege',
                          HINT = 'as a superuser or a role with CREATEROLE: CREATE ROLE carecoord_app LOGIN PASSWORD ''...''; (deploy/README.md)';
        END;
    END IF;
    IF current_user = 'carecoord_app' OR pg_has_role(current_user, 'carecoord_app', 'MEMBER')
            AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        RAISE EXCEPTION 'migrations must run as the owner of the schema, not as the services'' role (%)', current_user
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'set CARECOORD_MIGRATE_DATABASE_URL to the owner''s URL';
    END IF;
    IF (SELECT rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls OR rolreplication
        FROM pg_roles WHERE rolname = 'carecoord_app') THEN
        RAISE EXCEPTION 'the role carecoord_app must have no SUPERUSER, CREATEROLE, CREATEDB, BYPASSRLS or REPLICATION'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
END
$$;

DO $$
DECLARE
    t record;
    wanted text;
BEGIN
    FOR t IN
        SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
        ORDER BY c.relname
    LOOP
        wanted := CASE
            WHEN t.relname = 'schema_migrations' THEN NULL
            WHEN t.relname IN ('events', 'unique_claims') THEN 'SELECT, INSERT'
            WHEN t.relname = 'audit_outbox' THEN 'SELECT, INSERT, UPDATE, DELETE'
            WHEN t.relname LIKE 'audit\_%' THEN 'SELECT, INSERT'
            ELSE 'SELECT, INSERT, UPDATE, DELETE'
        END;
        EXECUTE format('REVOKE ALL ON TABLE public.%I FROM carecoord_app', t.relname);
        IF wanted IS NOT NULL THEN
            EXECUTE format('GRANT %s ON TABLE public.%I TO carecoord_app', wanted, t.relname);
        END IF;
    END LOOP;
END
$$;

REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM carecoord_app;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO carecoord_app;
GRANT carecoord_audit TO carecoord_app;

ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT ON TABLES TO carecoord_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE ON SEQUENCES TO carecoord_app;

-- Nobody but the owner creates in the schema (PostgreSQL 15 and later grant PUBLIC no
-- CREATE there; an older server, or an owner who granted it, does). The owner may not own
-- schema public on a managed server, so a refused REVOKE is checked, not trusted.
DO $$
BEGIN
    BEGIN
        REVOKE CREATE ON SCHEMA public FROM PUBLIC;
    EXCEPTION WHEN insufficient_privilege THEN
        NULL;
    END;
    IF has_schema_privilege('carecoord_app', 'public', 'CREATE')
            OR has_database_privilege('carecoord_app', current_database(), 'CREATE') THEN
        RAISE EXCEPTION 'carecoord_app may create objects in the database or in schema public'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'REVOKE CREATE ON SCHEMA public FROM PUBLIC; and REVOKE CREATE ON DATABASE from PUBLIC and carecoord_app';
    END IF;
END
$$;
