-- qanat SQLite schema, version 8: payloads in tables of their own.
-- An execution's input and output move out of the executions row. SQLite rewrites a
-- whole row (overflow pages included) on every UPDATE of any column, so with a 50 MB
-- input inline each claim, heartbeat, mark and finish read and rewrote 50 MB (and wrote
-- it to the WAL). Input and output get a table each for the same reason: a finish that
-- writes the output must not rewrite the input. An input row is written at enqueue, an
-- output row by a completing finish; neither is touched by status updates.
-- WITHOUT ROWID: one b-tree per table (the primary key), as small payloads are the rule.
CREATE TABLE inputs (
    id    TEXT PRIMARY KEY,
    input TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE outputs (
    id     TEXT PRIMARY KEY,
    output TEXT NOT NULL
) WITHOUT ROWID;

INSERT INTO inputs (id, input) SELECT id, input FROM executions;
INSERT INTO outputs (id, output) SELECT id, output FROM executions WHERE output IS NOT NULL;

ALTER TABLE executions DROP COLUMN input;
ALTER TABLE executions DROP COLUMN output;
