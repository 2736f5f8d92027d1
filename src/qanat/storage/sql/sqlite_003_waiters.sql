-- qanat SQLite schema, version 3: executions waiting in pipe.wait_for.

-- One row per waiting step. A dict match is stored as its shape (the sorted key paths,
-- JSON) and the value expected there (JSON); a predicate waiter has both NULL and is
-- poked (pokes + 1) by every send on its pipe. event_id and data are a dict waiter's delivery.
CREATE TABLE waiters (
    execution_id TEXT NOT NULL,
    key          TEXT NOT NULL,
    pipe         TEXT NOT NULL,
    shape        TEXT,
    value        TEXT,
    since        REAL NOT NULL,
    deadline     REAL,
    event_id     TEXT,
    pokes        INTEGER NOT NULL DEFAULT 0,
    data         TEXT,
    PRIMARY KEY (execution_id, key)
) WITHOUT ROWID;

-- A send finds the open waiters its data matches by (pipe, shape, value), and the open
-- predicate waiters of its pipe by (pipe, shape IS NULL): index look-ups only.
CREATE INDEX waiters_open ON waiters (pipe, shape, value) WHERE event_id IS NULL;

-- The distinct shapes waited on per pipe: a send projects its data once per shape.
-- Rows are added with their first waiter and dropped lazily by a send that finds no
-- open waiter of that shape left.
CREATE TABLE wait_shapes (
    pipe  TEXT NOT NULL,
    shape TEXT NOT NULL,
    PRIMARY KEY (pipe, shape)
) WITHOUT ROWID;
