-- qanat SQLite schema, version 8: RESERVED for the payloads table of another branch.
-- The migration runner needs numbers 1..n; this placeholder keeps sqlite_009_trace.sql
-- runnable until that branch lands. DELETE THIS FILE when sqlite_008_payloads.sql merges.
SELECT 1;
