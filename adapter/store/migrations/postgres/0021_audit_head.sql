-- The audit log's head (issue 21): the last record appended and its hash, moved by a trigger
-- once per statement that appends (by any process, of any version). A chain shows a record
-- removed or changed in its middle, but not its newest records cut off, nor the newest
-- replaced; the head does (`sluis audit verify`). It only moves forward and can be neither
-- removed nor truncated.

CREATE TABLE audit_head (
    id   INT    PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,      -- the last record appended (0: none yet)
    hash TEXT   NOT NULL       -- its hash
);

INSERT INTO audit_head (id, seq, hash)
SELECT 1,
       COALESCE((SELECT seq FROM audit_log ORDER BY seq DESC LIMIT 1), 0),
       COALESCE((SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1),
                '0000000000000000000000000000000000000000000000000000000000000000');

CREATE FUNCTION audit_head_forward() RETURNS trigger AS $$
BEGIN
    IF NEW.seq <= OLD.seq OR NEW.id <> OLD.id THEN
        RAISE EXCEPTION 'the audit log''s head only moves forward';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_head_forward BEFORE UPDATE ON audit_head
    FOR EACH ROW EXECUTE FUNCTION audit_head_forward();
CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse();
CREATE TRIGGER audit_head_no_truncate BEFORE TRUNCATE ON audit_head
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse();

CREATE FUNCTION audit_head_follow() RETURNS trigger AS $$
BEGIN
    UPDATE audit_head h SET seq = n.seq, hash = n.hash
    FROM (SELECT seq, hash FROM appended ORDER BY seq DESC LIMIT 1) n
    WHERE h.id = 1 AND n.seq > h.seq;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_head_follows AFTER INSERT ON audit_log
    REFERENCING NEW TABLE AS appended
    FOR EACH STATEMENT EXECUTE FUNCTION audit_head_follow();
