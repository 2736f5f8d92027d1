-- qanat PostgreSQL schema, version 2: RESERVED for the payloads table of another branch.
-- The migration runner needs numbers 1..n; this placeholder keeps postgres_003_trace.sql
-- runnable until that branch lands. DELETE THIS FILE when postgres_002_payloads.sql merges.
SELECT 1;
