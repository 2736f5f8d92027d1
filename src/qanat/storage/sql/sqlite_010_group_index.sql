-- qanat SQLite schema, version 10: listing one group's executions (the dashboard's group
-- filter, bulk actions on a group) newest first without walking every row. A group is set
-- at enqueue and never changes, so this index costs nothing on the claim/finish path.
CREATE INDEX executions_group ON executions ("group", created_at, id) WHERE "group" IS NOT NULL;
