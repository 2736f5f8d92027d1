-- qanat SQLite schema, version 2: events sent on pipes, what they triggered, and
-- triggers that failed (a transform raised or produced invalid input).

-- Events, newest first with a (sent_at, id) cursor, optionally of one pipe.
CREATE TABLE events (
    seq     INTEGER PRIMARY KEY,
    id      TEXT NOT NULL UNIQUE,
    pipe    TEXT NOT NULL,
    data    TEXT NOT NULL,
    sent_at REAL NOT NULL,
    source  TEXT
);

CREATE INDEX events_sent ON events (sent_at, id);
CREATE INDEX events_pipe ON events (pipe, sent_at, id);

-- The executions each event triggered, in the order they were enqueued.
CREATE TABLE event_executions (
    seq          INTEGER PRIMARY KEY,
    event_id     TEXT NOT NULL,
    execution_id TEXT NOT NULL
);

CREATE INDEX event_executions_event ON event_executions (event_id, seq);

-- Failed triggers; source is an event id or the id of the execution whose output
-- was the trigger (job.into).
CREATE TABLE trigger_failures (
    seq    INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    job    TEXT NOT NULL,
    error  TEXT NOT NULL,
    at     REAL NOT NULL
);

CREATE INDEX trigger_failures_source ON trigger_failures (source, seq);
CREATE INDEX trigger_failures_at ON trigger_failures (at);
