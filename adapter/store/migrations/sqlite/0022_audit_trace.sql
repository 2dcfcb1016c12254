-- The request's `X-Trace-Id` in its audit record (contract §3: all three trace headers go
-- into the record). Part of the record's hash when present; records without one hash as
-- they did before this column.
ALTER TABLE audit_log ADD COLUMN trace_id TEXT;
