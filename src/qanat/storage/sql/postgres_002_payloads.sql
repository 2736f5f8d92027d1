-- qanat PostgreSQL schema, version 2: payloads in a table of their own (as SQLite's
-- version 8). The executions row, updated on every claim, heartbeat and finish, stays
-- small; the payload row is written at enqueue and at a completing finish only.
CREATE TABLE payloads (
    id     text PRIMARY KEY,
    input  text NOT NULL,
    output text
);

INSERT INTO payloads (id, input, output) SELECT id, input, output FROM executions;

ALTER TABLE executions DROP COLUMN input, DROP COLUMN output;
