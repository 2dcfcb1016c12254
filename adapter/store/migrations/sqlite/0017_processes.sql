-- The processes serving from this database (issue 24): each writes its heartbeat here, so
-- that all know how many are alive and each allows its share of the request limits.
CREATE TABLE processes (
    id      TEXT   PRIMARY KEY,  -- a random id per start
    seen_at INTEGER NOT NULL     -- its last heartbeat (wall clock, µs)
);
