-- The explanation delay: staff releases and holds, the holder's waivers, and what a version
-- needs for its release moment to be computed again when rules change.

ALTER TABLE versions ADD COLUMN tagged INTEGER NOT NULL DEFAULT 0;   -- carries embargo.release_tag
CREATE INDEX versions_by_patient_release ON versions (patient_id, release_at, id);
CREATE INDEX versions_pending ON versions (release_at) WHERE release_at IS NULL;

CREATE TABLE release_actions (
    id            INTEGER PRIMARY KEY,
    resource_type TEXT    NOT NULL,
    fhir_id       TEXT    NOT NULL,
    action        TEXT    NOT NULL,          -- release | hold
    until         INTEGER,                   -- hold: until this moment; NULL: until released
    actor         TEXT    NOT NULL,          -- who placed it
    note          TEXT,
    at            INTEGER NOT NULL
);
CREATE INDEX release_actions_by_resource ON release_actions (resource_type, fhir_id, at);

CREATE TABLE waivers (
    id         INTEGER PRIMARY KEY,
    patient_id TEXT    NOT NULL,
    sections   TEXT    NOT NULL,             -- comma-separated; empty: the delay applies again
    user_id    INTEGER NOT NULL,
    made_at    INTEGER NOT NULL
);
CREATE INDEX waivers_by_patient ON waivers (patient_id, made_at);
