-- The audit log's head (issue 21): the last record appended and its hash, moved by a trigger
-- as records are appended (by any process, of any version). A chain shows a record removed
-- or changed in its middle, but not its newest records cut off, nor the newest replaced; the
-- head does (`sluis audit verify`). It only moves forward and cannot be removed.

CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,     -- the last record appended (0: none yet)
    hash TEXT    NOT NULL      -- its hash
);

INSERT INTO audit_head (id, seq, hash)
SELECT 1,
       COALESCE((SELECT seq FROM audit_log ORDER BY seq DESC LIMIT 1), 0),
       COALESCE((SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1),
                '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TRIGGER audit_head_forward BEFORE UPDATE ON audit_head
WHEN NEW.seq <= OLD.seq OR NEW.id <> OLD.id
BEGIN
    SELECT RAISE(ABORT, 'the audit log''s head only moves forward');
END;

CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head
BEGIN
    SELECT RAISE(ABORT, 'the audit log''s head cannot be removed');
END;

CREATE TRIGGER audit_head_follows AFTER INSERT ON audit_log
WHEN NEW.seq > (SELECT seq FROM audit_head WHERE id = 1)
BEGIN
    UPDATE audit_head SET seq = NEW.seq, hash = NEW.hash WHERE id = 1;
END;
