-- The audit journal's files whose records are in audit_log (audit/journal.rs): a file is
-- named here in the transaction that moves its records, so that a file found after a crash
-- is moved once, never twice. The row goes when the file has been removed.
CREATE TABLE audit_journal (
    file TEXT PRIMARY KEY
);
