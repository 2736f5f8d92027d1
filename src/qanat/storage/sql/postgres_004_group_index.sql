-- qanat PostgreSQL schema, version 4: one group's executions newest first by index (the
-- dashboard's group filter, bulk actions on a group). Set at enqueue, never updated.
CREATE INDEX executions_group ON executions ("group", created_at, id) WHERE "group" IS NOT NULL;
