-- The processes that write audit journals (audit/journal.rs), by the prefix of their files'
-- names, registered when each starts. A journal file whose prefix is not here was not
-- written by a process of this database: it is set aside (`.foreign`), not taken into the
-- log. The row with the empty prefix stands for the files that versions before this table
-- left: they are taken once, by the first recovery after this migration, which removes it.
CREATE TABLE audit_writers (
    prefix TEXT    PRIMARY KEY,
    at     INTEGER NOT NULL      -- when the process started (wall clock, µs)
);

INSERT INTO audit_writers (prefix, at) VALUES ('', 0);
