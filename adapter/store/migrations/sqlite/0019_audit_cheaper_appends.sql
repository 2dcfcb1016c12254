-- Cheaper appends to the audit trail (issue 21): a client row needs its record (the foreign
-- key, which the adapter's connections enforce, and `sluis audit verify`, which names a row
-- of no record), and no record is added where the chain was pruned (audit_log's trigger), so
-- the same check on every client row was run twice. SQLite has no statement triggers.

DROP TRIGGER audit_patients_no_insert_below;
