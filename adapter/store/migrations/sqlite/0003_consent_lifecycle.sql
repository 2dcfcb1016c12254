-- Consent and the account lifecycle: temporary user blocks, invitations by the holder,
-- client blocks, the care and life status that ingest reads out of EpisodeOfCare and Patient,
-- and a log of every account change.

ALTER TABLE users ADD COLUMN blocked_until INTEGER;   -- NULL: until unblocked
ALTER TABLE users ADD COLUMN blocked_by TEXT;
ALTER TABLE links ADD COLUMN invited_by INTEGER;      -- the holder's link that invited a member
ALTER TABLE codes ADD COLUMN invited_by INTEGER;

CREATE TABLE client_blocks (
    patient_id TEXT    PRIMARY KEY,                 -- a row: all portal access to the client is blocked (R8)
    blocked_at INTEGER NOT NULL,
    reason     TEXT,
    actor      TEXT    NOT NULL
);

CREATE TABLE care_episodes (                        -- the newest version of each EpisodeOfCare
    resource_id INTEGER PRIMARY KEY,
    patient_id  TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    start_at    INTEGER,
    end_at      INTEGER,
    recorded_at INTEGER NOT NULL
);
CREATE INDEX care_episodes_by_patient ON care_episodes (patient_id);

CREATE TABLE client_life (                          -- from the newest version of the Patient
    patient_id  TEXT    PRIMARY KEY,
    deceased_at INTEGER NOT NULL
);

CREATE TABLE account_events (
    id         INTEGER PRIMARY KEY,
    at         INTEGER NOT NULL,
    actor      TEXT    NOT NULL,                    -- admin, a portal user (client/user), or the adapter
    kind       TEXT    NOT NULL,
    user_id    INTEGER,
    patient_id TEXT,
    link_id    INTEGER,
    detail     TEXT
);
CREATE INDEX account_events_by_patient ON account_events (patient_id, at);
