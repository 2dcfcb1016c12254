-- Closing the doors an outside review found (issue 18):
-- * invitations get a public id (the holder lists and revokes them) and a revocation moment;
-- * one holder per client is kept by the database, not only by the code that redeems codes;
-- * a reference remembers the element path it sits in, so that a reference inside an element
--   redacted for a role does not make its target visible to that role. Rows written before
--   keep an empty path, which counts as redacted wherever a rule redacts anything of the
--   referring type for the role. It also carries the referring version's client ('' for none),
--   in its key, so that "does a version this user may see refer to it" seeks the user's
--   clients' references instead of reading those of every client.

ALTER TABLE codes ADD COLUMN id TEXT;
ALTER TABLE codes ADD COLUMN revoked_at INTEGER;
UPDATE codes SET id = lower(hex(randomblob(16))) WHERE id IS NULL;
CREATE UNIQUE INDEX codes_by_id ON codes (id);

UPDATE links SET ended_at = changed_at,
                 ended_reason = 'a second holder of the client, ended when one holder became a constraint'
 WHERE role = 'holder' AND ended_at IS NULL
   AND id NOT IN (SELECT MAX(id) FROM links WHERE role = 'holder' AND ended_at IS NULL GROUP BY patient_id);
CREATE UNIQUE INDEX links_one_holder ON links (patient_id) WHERE role = 'holder' AND ended_at IS NULL;

CREATE TABLE refs_with_element (
    target_type TEXT    NOT NULL,
    target_id   TEXT    NOT NULL,
    patient_id  TEXT    NOT NULL,              -- the referring version's client; '' for none
    version_id  INTEGER NOT NULL,
    element     TEXT    NOT NULL,              -- e.g. `contact.organization`; '' for rows from before
    PRIMARY KEY (target_type, target_id, patient_id, version_id, element)
) WITHOUT ROWID;
INSERT INTO refs_with_element (target_type, target_id, patient_id, version_id, element)
SELECT r.target_type, r.target_id, COALESCE(v.patient_id, ''), r.version_id, ''
  FROM refs r JOIN versions v ON v.id = r.version_id;
DROP TABLE refs;
ALTER TABLE refs_with_element RENAME TO refs;
