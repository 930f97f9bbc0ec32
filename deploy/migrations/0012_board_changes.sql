-- The boards' change log: each change a board subscriber hears of, kept for a while by
-- the store position of the event it comes from, so that a subscriber that was away
-- resumes after the last position it received (`boardChanged(after:)`), with no gap and
-- no duplicate. Written in the same transaction as the board; pruned by age.
CREATE TABLE board_changes (
    id          bigserial   PRIMARY KEY,
    team_id     text        NOT NULL,
    position    bigint      NOT NULL,
    body        jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX board_changes_team ON board_changes (team_id, position, id);
CREATE INDEX board_changes_age ON board_changes (created_at);

-- Per team, the highest position whose changes are no longer all in the log: a
-- subscriber asking to resume from before it must read the board again.
CREATE TABLE board_change_horizon (
    team_id     text        PRIMARY KEY,
    position    bigint      NOT NULL
);

-- Boards that existed before the log have no history in it.
INSERT INTO board_change_horizon (team_id, position)
SELECT team_id, position FROM projection_positions WHERE projection = 'board';

-- The services append to the log and prune it (default privileges give SELECT, INSERT).
GRANT SELECT, INSERT, UPDATE, DELETE ON board_changes, board_change_horizon TO carecoord_app;
