-- qanat SQLite schema, version 1.
-- Columns mirror the record classes in qanat.storage.base field for field, in the same
-- order, so a row maps onto a record without renaming. Booleans are INTEGER 0/1.

CREATE TABLE qanat_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

INSERT INTO qanat_meta (key, value) VALUES ('application', 'qanat');

CREATE TABLE executions (
    id              TEXT PRIMARY KEY,
    job             TEXT NOT NULL,
    input           TEXT NOT NULL,
    status          TEXT NOT NULL,
    priority        INTEGER NOT NULL DEFAULT 0,
    key             TEXT,
    "group"         TEXT,
    parent_id       TEXT,
    attempt         INTEGER NOT NULL DEFAULT 1,
    max_attempts    INTEGER NOT NULL DEFAULT 3,
    created_at      REAL NOT NULL,
    run_at          REAL NOT NULL,
    available_at    REAL,
    deadline        REAL,
    started_at      REAL,
    completed_at    REAL,
    owner           TEXT,
    output          TEXT,
    error           TEXT,
    reason          TEXT,
    progress        TEXT,
    pause_requested INTEGER NOT NULL DEFAULT 0,
    claims          INTEGER NOT NULL DEFAULT 0
);

-- Indexes are chosen so that each hot write touches as few b-trees as possible:
-- an enqueue writes the table, the primary key, the claim index and the listing
-- index; a claim rewrites one claim-index entry; a finish moves the row from the
-- claim index to the finished index. The other indexes are partial and only hold
-- rows in the states their queries ask for.

-- The claim: due executions, highest priority first, then oldest available_at.
-- Only claimable rows are indexed; job, status and owner are carried so the claim
-- (and the rare reclaim of a dead worker's executions) filter without the table.
CREATE INDEX executions_ready
    ON executions (priority DESC, available_at, id, job, status, owner)
    WHERE available_at IS NOT NULL AND status IN ('pending', 'running', 'waiting');

-- Idempotency keys.
CREATE UNIQUE INDEX executions_job_key ON executions (job, key) WHERE key IS NOT NULL;

-- Children of an execution (cancel cascade, waking a waiting parent).
CREATE INDEX executions_parent ON executions (parent_id) WHERE parent_id IS NOT NULL;

-- Listing newest first with a (created_at, id) cursor.
CREATE INDEX executions_created ON executions (created_at, id);

-- Finished executions by status, job and completion time: cache look-ups
-- (status = 'completed' AND job = ? AND completed_at >= ?) and retention (status = ?).
CREATE INDEX executions_finished ON executions (status, job, completed_at)
    WHERE status IN ('completed', 'failed', 'cancelled', 'skipped');

CREATE TABLE steps (
    seq          INTEGER PRIMARY KEY,
    execution_id TEXT NOT NULL,
    key          TEXT NOT NULL,
    kind         TEXT NOT NULL,
    name         TEXT NOT NULL,
    status       TEXT NOT NULL,
    result       TEXT,
    error        TEXT,
    attempts     INTEGER NOT NULL DEFAULT 1,
    job_attempt  INTEGER NOT NULL DEFAULT 1,
    started_at   REAL NOT NULL,
    finished_at  REAL NOT NULL,
    UNIQUE (execution_id, key)
);

CREATE TABLE logs (
    seq          INTEGER PRIMARY KEY,
    execution_id TEXT NOT NULL,
    at           REAL NOT NULL,
    message      TEXT NOT NULL,
    fields       TEXT,
    step         TEXT
);

CREATE INDEX logs_execution ON logs (execution_id, seq);

CREATE TABLE workers (
    id            TEXT PRIMARY KEY,
    host          TEXT NOT NULL,
    pid           INTEGER NOT NULL,
    registered_at REAL NOT NULL
);

CREATE INDEX workers_host ON workers (host);
