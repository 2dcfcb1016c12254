-- The audit trail (issue 21, NEN 7513): one record per request that touches client data or
-- is refused, hash-chained (each record holds the hash of the one before it), append-only.

CREATE TABLE audit_log (
    seq            INTEGER PRIMARY KEY,        -- 1, 2, 3 …: the chain's order
    at             INTEGER NOT NULL,           -- wall-clock µs
    action         TEXT    NOT NULL,           -- read, search, ingest, admin, … (audit/mod.rs)
    route          TEXT    NOT NULL,           -- the route template, e.g. /fhir/{type}/{id}
    method         TEXT    NOT NULL,
    query          TEXT,                       -- the query string as sent
    client_id      TEXT,                       -- the portal vendor, source client or admin
    user_id        TEXT,                       -- the portal user (X-Portal-User)
    patient        TEXT,                       -- the clients (Patient ids) whose data it was, space-separated
    resources      TEXT,                       -- the Type/id of what was returned, space-separated
    detail         TEXT,                       -- a batch's counts (ingest, pull): entries, refused
    status         INTEGER NOT NULL,
    reason         TEXT,                       -- the OperationOutcome reason code of a refusal
    request_id     TEXT,
    correlation_id TEXT,
    remote         TEXT,
    prev_hash      TEXT    NOT NULL,
    hash           TEXT    NOT NULL
);

CREATE INDEX audit_log_user ON audit_log (client_id, user_id, seq);
CREATE INDEX audit_log_at ON audit_log (at);

-- Each client a record is about, one row each (a search may serve several clients' data): for
-- the client's own view, the admin's filter and the exposure report (R19).
CREATE TABLE audit_patients (
    seq     INTEGER NOT NULL REFERENCES audit_log (seq),
    patient TEXT   NOT NULL,
    types   TEXT,                                -- the resource types of its data served, space-separated
    PRIMARY KEY (patient, seq)
);
CREATE INDEX audit_patients_seq ON audit_patients (seq);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit records cannot be changed');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit records cannot be removed');
END;

CREATE TRIGGER audit_patients_no_update BEFORE UPDATE ON audit_patients
BEGIN
    SELECT RAISE(ABORT, 'audit records cannot be changed');
END;

CREATE TRIGGER audit_patients_no_delete BEFORE DELETE ON audit_patients
BEGIN
    SELECT RAISE(ABORT, 'audit records cannot be removed');
END;
