-- Fewer B-trees to maintain per version, for ingest speed: the (resource_id, version_no)
-- uniqueness is kept by the resources row (its last_version), lookups by resource use
-- versions_newer, resources outside the patient compartment are found through
-- versions_by_patient (patient_id NULL), and waiting versions are looked for only when rules
-- change (a scan at start). SQLite cannot drop a table constraint, so the table is rebuilt.

CREATE TABLE versions_lean (
    id          INTEGER PRIMARY KEY,
    resource_id INTEGER NOT NULL,
    version_no  INTEGER NOT NULL,
    type        TEXT    NOT NULL,
    fhir_id     TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    patient_id  TEXT,
    section     TEXT,
    arrived_at  INTEGER NOT NULL,
    release_at  INTEGER,
    rule        TEXT    NOT NULL DEFAULT '',
    withdrawn   INTEGER NOT NULL DEFAULT 0,
    sort_date   INTEGER NOT NULL,
    body        TEXT    NOT NULL,
    tagged      INTEGER NOT NULL DEFAULT 0,
    meta        TEXT,
    has_newer   INTEGER NOT NULL DEFAULT 0
);
INSERT INTO versions_lean (id, resource_id, version_no, type, fhir_id, source, patient_id, section,
    arrived_at, release_at, rule, withdrawn, sort_date, body, tagged, meta, has_newer)
SELECT id, resource_id, version_no, type, fhir_id, source, patient_id, section,
    arrived_at, release_at, rule, withdrawn, sort_date, body, tagged, meta, has_newer FROM versions;
DROP TABLE versions;
ALTER TABLE versions_lean RENAME TO versions;
CREATE INDEX versions_newer ON versions (resource_id, id, release_at);
CREATE INDEX versions_by_patient ON versions (patient_id, type, release_at, id);
CREATE INDEX versions_by_patient_date ON versions (patient_id, type, sort_date, id);
CREATE INDEX versions_by_patient_release ON versions (patient_id, release_at, id);
