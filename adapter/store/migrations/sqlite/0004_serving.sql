-- Serving without re-parsing: a version's `meta` is kept beside its body (the body is stored
-- without it), and `has_newer` says whether a later version of the resource exists, so that
-- the "no newer released version" probe runs only for resources that have one.

ALTER TABLE versions ADD COLUMN meta TEXT;                        -- NULL: the body still holds its meta
ALTER TABLE versions ADD COLUMN has_newer INTEGER NOT NULL DEFAULT 0;
UPDATE versions SET has_newer = 1
 WHERE EXISTS (SELECT 1 FROM versions n WHERE n.resource_id = versions.resource_id AND n.version_no > versions.version_no);
