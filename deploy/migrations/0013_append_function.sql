-- A group commit in one statement. The event store used to send BEGIN with the append
-- lock, the versions read, the INSERT and COMMIT: four round trips, the lock held across
-- all of them. This function does the same work inside the server, so a commit is one
-- statement in autocommit and the lock is held only while the server works.
--
-- What it keeps (services/common/event_store.py documents the contract):
--   - The lock (7206351002, EventStore's _APPEND_LOCK) is taken first and held to the end
--     of the statement's transaction, so positions are handed out in commit order and
--     stay gap-free; the head and the versions are read after it (a VOLATILE function
--     takes a new snapshot for each statement in it).
--   - Each command (its writes numbered alike in w_command, 1, 2, ..., in order) is
--     checked against the versions the commands before it left: a stale write refuses the
--     command ('version'), then a claim held already or made twice by the command refuses
--     it ('claim'). A refused command writes nothing; the others go on.
--   - Claims are checked before any is inserted (unique_claims refuses DELETE, so a
--     refused command must never have inserted one); all appends hold the lock, so the
--     check cannot race another append. The primary key still stands behind it.
--   - NOTIFY carecoord_events (the outbox relay's wake-up) is delivered at commit.
--
-- Arguments: per write, its stream, expected version (NULL: no check), number of events
-- and command; per claim, its write (1-based) and scope and key, in write order; per
-- event, its stream and envelope fields, in write order. Results: per event, its position
-- and version (NULL when its command was refused); per command, the refusal (NULL kind
-- when it was accepted) with the stale write's stream, expected and actual version, or the
-- taken claim's scope.
CREATE FUNCTION events_append(
    w_stream text[], w_expected integer[], w_count integer[], w_command integer[],
    c_write integer[], c_scope text[], c_key text[],
    e_stream text[], e_event_id uuid[], e_type text[], e_schema_version integer[],
    e_team_id text[], e_patient_id text[], e_actor_id text[], e_occurred_at timestamptz[],
    e_correlation_id text[], e_causation_id text[], e_payload jsonb[],
    OUT positions bigint[], OUT versions integer[],
    OUT refused_kind text[], OUT refused_stream text[], OUT refused_expected integer[],
    OUT refused_actual integer[], OUT refused_scope text[]
) LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    n_writes  integer := coalesce(array_length(w_stream, 1), 0);
    n_claims  integer := coalesce(array_length(c_write, 1), 0);
    n_events  integer := coalesce(array_length(e_stream, 1), 0);
    n_commands integer := coalesce(w_command[n_writes], 0);
    head      bigint;
    w_ix      integer[];  -- each write's stream, as an index into at_version
    at_version integer[];  -- each stream's version (while a command is checked, with its
                           -- writes so far; after, with the commands accepted)
    w integer := 1;       -- the command's first write
    last_w integer;
    c integer := 1;       -- its first claim
    last_c integer;
    e integer := 1;       -- its first event
    s integer;
    checked integer;      -- the command's last write that passed its check
    claimed integer;
BEGIN
    -- Under REPEATABLE READ or SERIALIZABLE the statement's snapshot would predate the
    -- lock: the head and versions read below would miss what committed meanwhile.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'events_append runs in READ COMMITTED only, not %',
            current_setting('transaction_isolation')
            USING ERRCODE = 'invalid_transaction_state';
    END IF;
    -- The arrays must agree: a value per write, per claim and per event; the commands
    -- number the writes 1, 2, ... in order, each claim names a write, in order, and the
    -- events are the writes' counts (checked as the loop below walks them, no query).
    IF coalesce(array_length(w_count, 1), 0) <> n_writes
       OR coalesce(array_length(w_command, 1), 0) <> n_writes
       OR coalesce(array_length(w_expected, 1), 0) <> n_writes
       OR coalesce(array_length(c_scope, 1), 0) <> n_claims
       OR coalesce(array_length(c_key, 1), 0) <> n_claims THEN
        RAISE EXCEPTION 'events_append: its writes, claims and events do not agree'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock(7206351002);
    PERFORM pg_notify('carecoord_events', '');
    SELECT coalesce(max(position), 0) INTO head FROM events;
    -- The streams numbered in sorted order, their versions in the same order: lookups by
    -- index, never a search (a batch of thousands of commands stays linear).
    SELECT array_agg(u.ix ORDER BY u.n) INTO w_ix
      FROM (SELECT n, dense_rank() OVER (ORDER BY id) AS ix
              FROM unnest(w_stream) WITH ORDINALITY AS w(id, n)) AS u;
    SELECT array_agg((SELECT coalesce(max(ev.stream_version), 0) FROM events ev
                      WHERE ev.stream_id = streams.id) ORDER BY streams.id)
      INTO at_version
      FROM (SELECT DISTINCT id FROM unnest(w_stream) AS id) AS streams;

    positions := array_fill(NULL::bigint, ARRAY[n_events]);
    versions := array_fill(NULL::integer, ARRAY[n_events]);
    refused_kind := array_fill(NULL::text, ARRAY[n_commands]);
    refused_stream := array_fill(NULL::text, ARRAY[n_commands]);
    refused_expected := array_fill(NULL::integer, ARRAY[n_commands]);
    refused_actual := array_fill(NULL::integer, ARRAY[n_commands]);
    refused_scope := array_fill(NULL::text, ARRAY[n_commands]);

    FOR cmd IN 1..n_commands LOOP
        IF w_command[w] IS DISTINCT FROM cmd THEN
            RAISE EXCEPTION 'events_append: its writes, claims and events do not agree'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        last_w := w;
        WHILE last_w < n_writes AND w_command[last_w + 1] = cmd LOOP
            last_w := last_w + 1;
        END LOOP;
        last_c := c - 1;
        WHILE last_c < n_claims AND c_write[last_c + 1] <= last_w LOOP
            last_c := last_c + 1;
            IF c_write[last_c] < w THEN
                RAISE EXCEPTION 'events_append: its writes, claims and events do not agree'
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
        END LOOP;

        -- Versions move on with each write checked (a command writing a stream twice is
        -- checked against its own first write), and back if the command is refused.
        checked := w - 1;
        FOR i IN w..last_w LOOP
            s := w_ix[i];
            IF w_count[i] IS NULL OR w_count[i] < 0 THEN
                RAISE EXCEPTION 'events_append: its writes, claims and events do not agree'
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            IF w_expected[i] IS NOT NULL AND at_version[s] <> w_expected[i] THEN
                refused_kind[cmd] := 'version';
                refused_stream[cmd] := w_stream[i];
                refused_expected[cmd] := w_expected[i];
                refused_actual[cmd] := at_version[s];
                EXIT;
            END IF;
            at_version[s] := at_version[s] + w_count[i];
            checked := i;
        END LOOP;

        IF refused_kind[cmd] IS NULL THEN
            FOR k IN c..last_c LOOP
                IF EXISTS (SELECT 1 FROM unique_claims
                           WHERE scope = c_scope[k] AND key = c_key[k])
                   OR EXISTS (SELECT 1 FROM generate_series(c, k - 1) AS j
                              WHERE c_scope[j] = c_scope[k] AND c_key[j] = c_key[k]) THEN
                    refused_kind[cmd] := 'claim';
                    refused_scope[cmd] := c_scope[k];
                    EXIT;
                END IF;
            END LOOP;
        END IF;

        IF refused_kind[cmd] IS NULL THEN
            IF last_c >= c THEN
                -- Checked above under the lock; a claim inserted by a writer that skipped
                -- the lock still refuses the batch, with no key in the error (it may be PHI).
                INSERT INTO unique_claims (scope, key, stream_id)
                SELECT c_scope[k], c_key[k], w_stream[c_write[k]]
                  FROM generate_series(c, last_c) AS k
                    ON CONFLICT DO NOTHING;
                GET DIAGNOSTICS claimed = ROW_COUNT;
                IF claimed <> last_c - c + 1 THEN
                    RAISE EXCEPTION 'a claim was taken outside the append lock'
                        USING ERRCODE = 'unique_violation';
                END IF;
            END IF;
            -- Each write's events follow its stream's version before it (at_version holds
            -- the version after the command's writes: count back from there).
            FOR i IN REVERSE last_w..w LOOP
                at_version[w_ix[i]] := at_version[w_ix[i]] - w_count[i];
            END LOOP;
            FOR i IN w..last_w LOOP
                s := w_ix[i];
                FOR n IN 1..w_count[i] LOOP
                    head := head + 1;
                    at_version[s] := at_version[s] + 1;
                    positions[e] := head;
                    versions[e] := at_version[s];
                    e := e + 1;
                END LOOP;
            END LOOP;
        ELSE
            FOR i IN REVERSE checked..w LOOP
                at_version[w_ix[i]] := at_version[w_ix[i]] - w_count[i];
            END LOOP;
            FOR i IN w..last_w LOOP
                e := e + w_count[i];
            END LOOP;
        END IF;
        w := last_w + 1;
        c := last_c + 1;
    END LOOP;
    IF w <> n_writes + 1 OR c <> n_claims + 1 OR e <> n_events + 1 THEN
        RAISE EXCEPTION 'events_append: its writes, claims and events do not agree'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    INSERT INTO events (position, stream_id, stream_version, event_id, type, schema_version,
                        team_id, patient_id, actor_id, occurred_at, correlation_id,
                        causation_id, payload)
    SELECT r.position, r.stream_id, r.stream_version, r.event_id, r.type, r.schema_version,
           r.team_id, r.patient_id, r.actor_id, r.occurred_at, r.correlation_id,
           r.causation_id, r.payload
      FROM unnest(positions, e_stream, versions, e_event_id, e_type, e_schema_version,
                  e_team_id, e_patient_id, e_actor_id, e_occurred_at, e_correlation_id,
                  e_causation_id, e_payload)
           AS r(position, stream_id, stream_version, event_id, type, schema_version,
                team_id, patient_id, actor_id, occurred_at, correlation_id, causation_id,
                payload)
     WHERE r.position IS NOT NULL;
END;
$$;

-- Invoker's rights: the caller needs INSERT on events and unique_claims itself, which
-- the services' role has (0008); nobody else need call it.
REVOKE EXECUTE ON FUNCTION events_append(
    text[], integer[], integer[], integer[], integer[], text[], text[], text[], uuid[],
    text[], integer[], text[], text[], text[], timestamptz[], text[], text[], jsonb[]
) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION events_append(
    text[], integer[], integer[], integer[], integer[], text[], text[], text[], uuid[],
    text[], integer[], text[], text[], text[], timestamptz[], text[], text[], jsonb[]
) TO carecoord_app;
