-- What goes back to the record systems (issue 23, R14, R15, R17): approved messages and
-- correction requests, each delivered until the record system accepts it. `key` makes an item
-- once per thing delivered; `version` grows when what is to be delivered changes (a decided
-- request), so that a delivery of the older body cannot mark the newer one delivered.
CREATE TABLE outbox (
    seq           BIGSERIAL PRIMARY KEY,
    key           TEXT    NOT NULL UNIQUE, -- message:<id> or request:<id>
    source        TEXT    NOT NULL,        -- whose [sources.writeback] takes it
    patient_id    TEXT    NOT NULL,
    resource_type TEXT    NOT NULL,        -- Communication or Task
    identifier    TEXT    NOT NULL,        -- system|value the record system deduplicates on
    method        TEXT    NOT NULL,        -- create (POST, If-None-Exist) or update (conditional PUT)
    body          TEXT    NOT NULL,
    version       BIGINT  NOT NULL DEFAULT 1,
    state         TEXT    NOT NULL,        -- pending or delivered
    attempts      BIGINT  NOT NULL DEFAULT 0,
    next_at       BIGINT  NOT NULL,        -- not tried before (wall clock, µs)
    claimed_by    TEXT,                    -- the process delivering it now
    claimed_until BIGINT,
    last_error    TEXT,
    last_error_at BIGINT,
    delivered_at  BIGINT,
    location      TEXT,                    -- where the record system keeps it
    created_at    BIGINT  NOT NULL
);
CREATE INDEX outbox_due ON outbox (state, source, next_at);

-- Correction requests from a client (R14): to correct, add to, erase or transfer data; due
-- within at most 30 days, decided with a reason when refused.
CREATE TABLE requests (
    seq         BIGSERIAL PRIMARY KEY,
    id          TEXT    NOT NULL UNIQUE,  -- the Task's id (uuid)
    patient_id  TEXT    NOT NULL,
    client_id   TEXT    NOT NULL,         -- the portal vendor
    external_id TEXT    NOT NULL,         -- the vendor's X-Portal-User
    user_id     BIGINT  NOT NULL,
    source      TEXT    NOT NULL,
    code        TEXT    NOT NULL,         -- correction, addition, erasure, transfer
    focus       TEXT    NOT NULL,         -- Type/id of the resource concerned
    description TEXT    NOT NULL,
    requester   TEXT    NOT NULL,         -- who asked, as the care team reads it
    state       TEXT    NOT NULL,         -- requested, accepted, rejected
    reason      TEXT,
    decided_by  TEXT,
    decided_at  BIGINT,
    created_at  BIGINT  NOT NULL,
    due_at      BIGINT  NOT NULL,
    idempotency_key TEXT              -- the portal's Idempotency-Key, if sent
);
CREATE INDEX requests_open ON requests (state, due_at, seq);
CREATE INDEX requests_patient ON requests (patient_id, seq);
CREATE INDEX requests_sender ON requests (user_id, state);
CREATE UNIQUE INDEX requests_idempotency ON requests (client_id, external_id, idempotency_key);

-- A portal's retry of a post with the same Idempotency-Key gets the message the first made.
ALTER TABLE messages ADD COLUMN idempotency_key TEXT;
CREATE UNIQUE INDEX messages_idempotency ON messages (client_id, external_id, idempotency_key);
CREATE INDEX messages_client_waiting ON messages (patient_id, state);
