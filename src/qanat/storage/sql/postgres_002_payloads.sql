-- qanat PostgreSQL schema, version 2: payloads in tables of their own (as SQLite's
-- version 8). The executions row, updated on every claim, heartbeat and finish, stays
-- small; an input row is written at enqueue, an output row by a completing finish.
CREATE TABLE inputs (
    id    text PRIMARY KEY,
    input text NOT NULL
);

CREATE TABLE outputs (
    id     text PRIMARY KEY,
    output text NOT NULL
);

INSERT INTO inputs (id, input) SELECT id, input FROM executions;
INSERT INTO outputs (id, output) SELECT id, output FROM executions WHERE output IS NOT NULL;

ALTER TABLE executions DROP COLUMN input, DROP COLUMN output;
