-- Closing the doors an outside review found (issue 18):
-- * invitations get a public id (the holder lists and revokes them) and a revocation moment;
-- * one holder per client is kept by the database, not only by the code that redeems codes;
-- * one version per number of a resource, kept by the database (several processes and
--   connections write at once here);
-- * a reference remembers the element path it sits in, so that a reference inside an element
--   redacted for a role does not make its target visible to that role. Rows written before
--   keep an empty path, which counts as redacted wherever a rule redacts anything of the
--   referring type for the role. It also carries the referring version's client ('' for none),
--   in its key, so that "does a version this user may see refer to it" seeks the user's
--   clients' references instead of reading those of every client.

ALTER TABLE codes ADD COLUMN id TEXT;
ALTER TABLE codes ADD COLUMN revoked_at BIGINT;
UPDATE codes SET id = md5(random()::text || code_hash) WHERE id IS NULL;
CREATE UNIQUE INDEX codes_by_id ON codes (id);

UPDATE links SET ended_at = changed_at,
                 ended_reason = 'a second holder of the client, ended when one holder became a constraint'
 WHERE role = 'holder' AND ended_at IS NULL
   AND id NOT IN (SELECT MAX(id) FROM links WHERE role = 'holder' AND ended_at IS NULL GROUP BY patient_id);
CREATE UNIQUE INDEX links_one_holder ON links (patient_id) WHERE role = 'holder' AND ended_at IS NULL;

CREATE UNIQUE INDEX versions_one_per_number ON versions (resource_id, version_no);

ALTER TABLE refs ADD COLUMN element TEXT NOT NULL DEFAULT '';
ALTER TABLE refs ADD COLUMN patient_id TEXT NOT NULL DEFAULT '';
UPDATE refs SET patient_id = v.patient_id FROM versions v WHERE v.id = refs.version_id AND v.patient_id IS NOT NULL;
ALTER TABLE refs DROP CONSTRAINT refs_pkey;
ALTER TABLE refs ADD PRIMARY KEY (target_type, target_id, patient_id, version_id, element);
