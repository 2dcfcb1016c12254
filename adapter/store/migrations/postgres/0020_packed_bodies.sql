-- Versions' bodies as bytes: the adapter writes them compressed (zstd with the dictionary of
-- store/bodies.rs), since PostgreSQL compresses a value only in a row wider than about 2 kB
-- and a body is about 600 bytes. The bodies written before stay the JSON's UTF-8, which the
-- adapter tells from a compressed body by its first bytes. PostgreSQL need not try to
-- compress them again (EXTERNAL: a large one is still moved out of the row, uncompressed).
ALTER TABLE versions ALTER COLUMN body TYPE BYTEA USING convert_to(body, 'UTF8');
ALTER TABLE versions ALTER COLUMN body SET STORAGE EXTERNAL;
