-- Discovery: what a front end finds with only its user id. Both are ranges of the event
-- store read through an index, never a scan of a team's events.

-- A team's patients and huddles: the events that start their streams (PatientEnrolled,
-- HuddleScheduled), in store order, one index range per team and type.
CREATE INDEX events_team_type ON events (team_id, type, position);

-- The teams a user was put on (created, or given a role): the rosters to read for `me`.
CREATE INDEX events_roster_user ON events
    ((coalesce(payload->>'user_id', payload->>'lead_user_id')), team_id)
    WHERE type IN ('TeamCreated', 'RoleAssigned');
