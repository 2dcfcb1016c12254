-- Resources and every version of them, with search values in indexed tables.
-- Moments are INTEGER microseconds since the Unix epoch (UTC).

CREATE TABLE resources (
    id           INTEGER PRIMARY KEY,
    type         TEXT    NOT NULL,
    fhir_id      TEXT    NOT NULL,
    source       TEXT    NOT NULL,
    last_version INTEGER NOT NULL,
    last_hash    TEXT    NOT NULL,
    UNIQUE (type, fhir_id)
);

CREATE TABLE versions (
    id          INTEGER PRIMARY KEY,          -- global arrival order
    resource_id INTEGER NOT NULL REFERENCES resources (id),
    version_no  INTEGER NOT NULL,
    type        TEXT    NOT NULL,
    fhir_id     TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    patient_id  TEXT,                          -- the client it belongs to; NULL outside the patient compartment
    section     TEXT,                          -- NULL: no section rule maps it, never served
    arrived_at  INTEGER NOT NULL,
    release_at  INTEGER,                       -- shown from this moment; NULL: not (yet) released
    rule        TEXT    NOT NULL DEFAULT '',   -- the embargo rule that set release_at
    withdrawn   INTEGER NOT NULL DEFAULT 0,    -- 1: deleted or entered-in-error (a tombstone)
    sort_date   INTEGER NOT NULL,              -- low end of the `date` parameter, for _sort=date
    body        TEXT    NOT NULL,
    UNIQUE (resource_id, version_no)
);
CREATE INDEX versions_newer ON versions (resource_id, id, release_at);
CREATE INDEX versions_by_patient ON versions (patient_id, type, release_at, id);
CREATE INDEX versions_by_patient_date ON versions (patient_id, type, sort_date, id);
CREATE INDEX versions_by_type ON versions (type, release_at, id);
CREATE INDEX versions_by_release ON versions (release_at, id);

CREATE TABLE search_tokens (
    version_id INTEGER NOT NULL,
    param      TEXT    NOT NULL,
    system     TEXT    NOT NULL,
    code       TEXT    NOT NULL,
    PRIMARY KEY (version_id, param, code, system)
) WITHOUT ROWID;
CREATE INDEX search_tokens_by_code ON search_tokens (param, code, system, version_id);

CREATE TABLE search_dates (
    version_id INTEGER NOT NULL,
    param      TEXT    NOT NULL,
    lo         INTEGER NOT NULL,               -- inclusive
    hi         INTEGER NOT NULL,               -- exclusive
    PRIMARY KEY (version_id, param, lo, hi)
) WITHOUT ROWID;

CREATE TABLE refs (
    target_type TEXT    NOT NULL,
    target_id   TEXT    NOT NULL,
    version_id  INTEGER NOT NULL,
    PRIMARY KEY (target_type, target_id, version_id)
) WITHOUT ROWID;

-- Portal accounts: users per portal vendor, their links to clients, activation codes.

CREATE TABLE users (
    id                INTEGER PRIMARY KEY,
    client_id         TEXT    NOT NULL,        -- the portal vendor ([[clients]] id)
    external_id       TEXT    NOT NULL,        -- the vendor's own id of the person (X-Portal-User)
    birth_date        TEXT,
    terms_version     TEXT,
    terms_accepted_at INTEGER,
    blocked_at        INTEGER,
    blocked_reason    TEXT,
    created_at        INTEGER NOT NULL,
    UNIQUE (client_id, external_id)
);

CREATE TABLE links (
    id           INTEGER PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users (id),
    patient_id   TEXT    NOT NULL,
    role         TEXT    NOT NULL,             -- holder | reader | member
    relationship TEXT    NOT NULL,
    name         TEXT,
    sections     TEXT,                         -- NULL: every section; else comma-separated
    can_post     INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    changed_at   INTEGER NOT NULL,
    ended_at     INTEGER,
    ended_reason TEXT
);
CREATE INDEX links_by_user ON links (user_id);
CREATE INDEX links_by_patient ON links (patient_id);

CREATE TABLE codes (
    code_hash    TEXT    PRIMARY KEY,
    kind         TEXT    NOT NULL,             -- activation | invitation
    patient_id   TEXT    NOT NULL,
    relationship TEXT    NOT NULL,
    name         TEXT,
    sections     TEXT,
    can_post     INTEGER NOT NULL DEFAULT 0,
    created_by   TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    used_at      INTEGER,
    used_by      INTEGER
);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
