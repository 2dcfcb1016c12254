-- Messages from portal users to the care team (issue 23, R13, R15): held for moderation, then
-- shown (as a Communication of the client's source) or refused with a reason.
CREATE TABLE messages (
    seq         INTEGER PRIMARY KEY,    -- the order they came in
    id          TEXT    NOT NULL UNIQUE, -- the Communication's id and idempotency key (uuid)
    patient_id  TEXT    NOT NULL,       -- the client it is about
    client_id   TEXT    NOT NULL,       -- the portal vendor
    external_id TEXT    NOT NULL,       -- the vendor's X-Portal-User
    user_id     INTEGER NOT NULL,       -- portal_users.id of the sender
    source      TEXT    NOT NULL,       -- the source that holds the client's dossier
    body        TEXT    NOT NULL,       -- the Communication as posted (status preparation)
    state       TEXT    NOT NULL,       -- waiting, approved, rejected
    reason      TEXT,                   -- why it was rejected
    decided_by  TEXT,
    decided_at  INTEGER,
    created_at  INTEGER NOT NULL
);
CREATE INDEX messages_waiting ON messages (state, seq);
CREATE INDEX messages_sender ON messages (user_id, created_at);
