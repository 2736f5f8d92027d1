-- qanat SQLite schema, version 7: paused jobs (``queue.jobs.x.pause()``).
-- One row per paused job. A claim reads this tiny table in its own transaction and
-- leaves the executions of these jobs where they are, so a pause holds for every
-- worker on the file.
CREATE TABLE paused_jobs (
    job       TEXT PRIMARY KEY,
    paused_at REAL NOT NULL
) WITHOUT ROWID;
