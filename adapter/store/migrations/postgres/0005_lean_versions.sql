-- Fewer B-trees to maintain per version, for ingest speed: the (resource_id, version_no)
-- uniqueness is kept by the resources row (its last_version), lookups by resource use
-- versions_newer, resources outside the patient compartment are found through
-- versions_by_patient (patient_id NULL), and waiting versions are looked for only when rules
-- change (a scan at start).

ALTER TABLE versions DROP CONSTRAINT IF EXISTS versions_resource_id_version_no_key;
ALTER TABLE versions DROP CONSTRAINT IF EXISTS versions_resource_id_fkey;
DROP INDEX IF EXISTS versions_by_type;
DROP INDEX IF EXISTS versions_by_release;
DROP INDEX IF EXISTS versions_pending;
