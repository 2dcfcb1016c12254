-- Pulling from record systems (issue 20): where each source's poll of each resource type
-- stands, and which process may pull a source now.

CREATE TABLE pull_state (
    source          TEXT    NOT NULL,
    resource_type   TEXT    NOT NULL,        -- a resource type, or 'Type/_history' for its deletions
    cursor_at       INTEGER,                  -- the newest meta.lastUpdated taken in (µs); NULL: none yet
    pending_at      INTEGER,                  -- the newest seen in the poll under way (an unsorted source)
    last_success_at INTEGER,
    last_error      TEXT,
    last_error_at   INTEGER,
    pages           INTEGER NOT NULL DEFAULT 0,
    resources       INTEGER NOT NULL DEFAULT 0,
    retries         INTEGER NOT NULL DEFAULT 0,
    errors          INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (source, resource_type)
);

CREATE TABLE pull_leases (                    -- one row per source while a process pulls it
    source     TEXT    PRIMARY KEY,
    holder     TEXT    NOT NULL,             -- the process (a random id per start)
    expires_at INTEGER NOT NULL,                   -- wall-clock µs; another process may take it after
    nudged_at  INTEGER                        -- the last $notify for this source (any process); the holder pulls after it
);
