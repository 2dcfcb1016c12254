-- The search index carries what the access filter looks at (withdrawn, has_newer, section),
-- so that `total` and the filter run on the index without reading each version's row.
DROP INDEX versions_by_patient;
CREATE INDEX versions_by_patient ON versions (patient_id, type, release_at, id, withdrawn, has_newer, section);
