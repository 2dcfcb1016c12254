-- Tokens by value are looked up across all clients only at ingest, for conditional references
-- and `ifNoneExist`, and those name identifiers. Searches start from a client (the versions'
-- index by client) and test their tokens by version (the primary key). An index of every
-- token by value cost about a seventh of ingest's throughput; one of identifiers is enough.
DROP INDEX search_tokens_by_code;
CREATE INDEX search_tokens_by_identifier ON search_tokens (code, system, version_id)
    WHERE param = 'identifier';
