-- Pruning the audit trail (issue 21): records older than the retention period are removed
-- while the rest of the chain still verifies. An anchor says where the chain now starts
-- (the last removed record and its hash); the chain records the prune itself. Audit rows can
-- be removed only at or below an anchor; anchors can be neither changed nor removed.

CREATE TABLE audit_anchors (
    upto    INTEGER PRIMARY KEY,   -- the last record removed: the chain goes on from upto + 1
    hash    TEXT    NOT NULL,      -- that record's hash, which record upto + 1 chains to
    before  INTEGER NOT NULL,      -- the records removed were all older than this (µs)
    at      INTEGER NOT NULL       -- when it was pruned (µs)
);

CREATE TRIGGER audit_anchors_no_update BEFORE UPDATE ON audit_anchors
BEGIN
    SELECT RAISE(ABORT, 'audit anchors cannot be changed');
END;

CREATE TRIGGER audit_anchors_no_delete BEFORE DELETE ON audit_anchors
BEGIN
    SELECT RAISE(ABORT, 'audit anchors cannot be removed');
END;

DROP TRIGGER audit_log_no_delete;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
WHEN OLD.seq > (SELECT COALESCE(MAX(upto), 0) FROM audit_anchors)
BEGIN
    SELECT RAISE(ABORT, 'audit records cannot be removed');
END;

DROP TRIGGER audit_patients_no_delete;
CREATE TRIGGER audit_patients_no_delete BEFORE DELETE ON audit_patients
WHEN OLD.seq > (SELECT COALESCE(MAX(upto), 0) FROM audit_anchors)
BEGIN
    SELECT RAISE(ABORT, 'audit records cannot be removed');
END;

-- Nothing is slipped in where the chain was cut: no row at or below an anchor.
CREATE TRIGGER audit_log_no_insert_below BEFORE INSERT ON audit_log
WHEN NEW.seq <= (SELECT COALESCE(MAX(upto), 0) FROM audit_anchors)
BEGIN
    SELECT RAISE(ABORT, 'audit records cannot be added where the chain was pruned');
END;

CREATE TRIGGER audit_patients_no_insert_below BEFORE INSERT ON audit_patients
WHEN NEW.seq <= (SELECT COALESCE(MAX(upto), 0) FROM audit_anchors)
BEGIN
    SELECT RAISE(ABORT, 'audit records cannot be added where the chain was pruned');
END;
