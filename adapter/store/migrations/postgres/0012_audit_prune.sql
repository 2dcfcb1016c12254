-- Pruning the audit trail (issue 21): records older than the retention period are removed
-- while the rest of the chain still verifies. An anchor says where the chain now starts
-- (the last removed record and its hash); the chain records the prune itself. Audit rows can
-- be removed only at or below an anchor; anchors can be neither changed nor removed.

CREATE TABLE audit_anchors (
    upto    BIGINT PRIMARY KEY,    -- the last record removed: the chain goes on from upto + 1
    hash    TEXT   NOT NULL,       -- that record's hash, which record upto + 1 chains to
    before  BIGINT NOT NULL,       -- the records removed were all older than this (µs)
    at      BIGINT NOT NULL        -- when it was pruned (µs)
);

CREATE TRIGGER audit_anchors_no_change BEFORE UPDATE OR DELETE ON audit_anchors
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse();

CREATE TRIGGER audit_anchors_no_truncate BEFORE TRUNCATE ON audit_anchors
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse();

-- Updates are still refused; a delete only at or below the latest anchor.
CREATE FUNCTION audit_log_refuse_delete() RETURNS trigger AS $$
BEGIN
    IF OLD.seq > (SELECT COALESCE(MAX(upto), 0) FROM audit_anchors) THEN
        RAISE EXCEPTION 'audit records cannot be changed or removed';
    END IF;
    RETURN OLD;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER audit_log_no_change ON audit_log;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse();
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_delete();

DROP TRIGGER audit_patients_no_change ON audit_patients;
CREATE TRIGGER audit_patients_no_update BEFORE UPDATE ON audit_patients
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse();
CREATE TRIGGER audit_patients_no_delete BEFORE DELETE ON audit_patients
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_delete();

-- Nothing is slipped in where the chain was cut: no row at or below an anchor.
CREATE FUNCTION audit_log_refuse_below() RETURNS trigger AS $$
BEGIN
    IF NEW.seq <= (SELECT COALESCE(MAX(upto), 0) FROM audit_anchors) THEN
        RAISE EXCEPTION 'audit records cannot be added where the chain was pruned';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_log_no_insert_below BEFORE INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_below();
CREATE TRIGGER audit_patients_no_insert_below BEFORE INSERT ON audit_patients
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_below();
