-- qanat SQLite schema, version 8: payloads in a table of their own.
-- An execution's input and output move out of the executions row. SQLite rewrites a
-- whole row (overflow pages included) on every UPDATE of any column, so with a 50 MB
-- input inline each claim, heartbeat, mark and finish read and rewrote 50 MB (and wrote
-- it to the WAL). The payloads row is written at enqueue and at a completing finish only.
-- WITHOUT ROWID: one b-tree per row (the primary key), as small payloads are the rule.
CREATE TABLE payloads (
    id     TEXT PRIMARY KEY,
    input  TEXT NOT NULL,
    output TEXT
) WITHOUT ROWID;

INSERT INTO payloads (id, input, output) SELECT id, input, output FROM executions;

ALTER TABLE executions DROP COLUMN input;
ALTER TABLE executions DROP COLUMN output;
