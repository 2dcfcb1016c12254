-- The search index also carries resource_id, which the "no newer released version" test
-- reads: with it, `total` (a COUNT over all of a client's matching versions) runs on the
-- index alone instead of reading every version's row (0006 left it out).
DROP INDEX versions_by_patient;
CREATE INDEX versions_by_patient ON versions (patient_id, type, release_at, id, withdrawn, has_newer, section, resource_id);
