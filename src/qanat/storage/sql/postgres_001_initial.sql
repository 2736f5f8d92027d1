-- qanat PostgreSQL schema, version 1: the SQLite schema versions 1 to 7 in one script
-- (same tables, columns in record order, same index names), in the schema named by the
-- URL (the connection's search_path). Times are seconds since the epoch (double
-- precision); booleans are integers 0/1 as in SQLite, so the shared statements agree.

CREATE TABLE qanat_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

INSERT INTO qanat_meta (key, value) VALUES ('application', 'qanat');

-- The hot table: updated on every claim, heartbeat and finish. Free space on each page
-- keeps those updates HOT (no index writes), and autovacuum comes early for the churn.
CREATE TABLE executions (
    id              text PRIMARY KEY,
    job             text NOT NULL,
    input           text NOT NULL,
    status          text NOT NULL,
    priority        integer NOT NULL DEFAULT 0,
    key             text,
    "group"         text,
    parent_id       text,
    attempt         integer NOT NULL DEFAULT 1,
    max_attempts    integer NOT NULL DEFAULT 3,
    created_at      double precision NOT NULL,
    run_at          double precision NOT NULL,
    available_at    double precision,
    deadline        double precision,
    started_at      double precision,
    completed_at    double precision,
    owner           text,
    output          text,
    error           text,
    reason          text,
    progress        text,
    pause_requested integer NOT NULL DEFAULT 0,
    claims          integer NOT NULL DEFAULT 0,
    flow            text,
    slot            text,
    gate            text,
    recoveries      integer NOT NULL DEFAULT 0,
    step_in_flight  text,
    -- insertion order: the tie-breaker SQLite's rowid is
    seq             bigint GENERATED ALWAYS AS IDENTITY
) WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02,
        autovacuum_analyze_scale_factor = 0.02);

-- The claim: claimable rows only (finished and parked ones are out of it), highest
-- priority first, then oldest available_at; the claim chooses FOR UPDATE SKIP LOCKED.
CREATE INDEX executions_ready
    ON executions (priority DESC, available_at, id) INCLUDE (job, status, owner, slot)
    WHERE available_at IS NOT NULL AND status IN ('pending', 'running', 'waiting');

CREATE UNIQUE INDEX executions_job_key ON executions (job, key) WHERE key IS NOT NULL;
CREATE INDEX executions_parent ON executions (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX executions_created ON executions (created_at, id);
CREATE INDEX executions_finished ON executions (status, job, completed_at)
    WHERE status IN ('completed', 'failed', 'cancelled', 'skipped');
CREATE INDEX executions_slots ON executions (slot) WHERE status = 'running' AND slot IS NOT NULL;
CREATE INDEX executions_parked ON executions (gate, priority DESC, run_at, id)
    WHERE gate IS NOT NULL AND available_at IS NULL;

-- Steps: append-mostly, in their own table.
CREATE TABLE steps (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    execution_id text NOT NULL,
    key          text NOT NULL,
    kind         text NOT NULL,
    name         text NOT NULL,
    status       text NOT NULL,
    result       text,
    error        text,
    attempts     integer NOT NULL DEFAULT 1,
    job_attempt  integer NOT NULL DEFAULT 1,
    started_at   double precision NOT NULL,
    finished_at  double precision NOT NULL,
    UNIQUE (execution_id, key)
);

CREATE TABLE logs (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    execution_id text NOT NULL,
    at           double precision NOT NULL,
    message      text NOT NULL,
    fields       text,
    step         text
);

CREATE INDEX logs_execution ON logs (execution_id, seq);

CREATE TABLE workers (
    id            text PRIMARY KEY,
    host          text NOT NULL,
    pid           integer NOT NULL,
    registered_at double precision NOT NULL,
    seq           bigint GENERATED ALWAYS AS IDENTITY
);

CREATE INDEX workers_host ON workers (host);

CREATE TABLE events (
    seq     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id      text NOT NULL UNIQUE,
    pipe    text NOT NULL,
    data    text NOT NULL,
    sent_at double precision NOT NULL,
    source  text
);

CREATE INDEX events_sent ON events (sent_at, id);
CREATE INDEX events_pipe ON events (pipe, sent_at, id);

CREATE TABLE event_executions (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     text NOT NULL,
    execution_id text NOT NULL
);

CREATE INDEX event_executions_event ON event_executions (event_id, seq);

CREATE TABLE trigger_failures (
    seq    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source text NOT NULL,
    job    text NOT NULL,
    error  text NOT NULL,
    at     double precision NOT NULL
);

CREATE INDEX trigger_failures_source ON trigger_failures (source, seq);
CREATE INDEX trigger_failures_at ON trigger_failures (at);

CREATE TABLE waiters (
    execution_id text NOT NULL,
    key          text NOT NULL,
    pipe         text NOT NULL,
    shape        text,
    value        text,
    since        double precision NOT NULL,
    deadline     double precision,
    event_id     text,
    pokes        integer NOT NULL DEFAULT 0,
    data         text,
    PRIMARY KEY (execution_id, key)
);

CREATE INDEX waiters_open ON waiters (pipe, shape, value) WHERE event_id IS NULL;

CREATE TABLE wait_shapes (
    pipe  text NOT NULL,
    shape text NOT NULL,
    PRIMARY KEY (pipe, shape)
);

CREATE TABLE event_wakes (
    event_id     text NOT NULL,
    execution_id text NOT NULL,
    PRIMARY KEY (event_id, execution_id)
);

CREATE TABLE gates (
    id       text PRIMARY KEY,
    ref      text,
    n        integer NOT NULL DEFAULT 0,
    first_at double precision,
    last_at  double precision,
    wake_at  double precision
);

CREATE INDEX gates_wake ON gates (wake_at) WHERE wake_at IS NOT NULL;

CREATE TABLE flow_marks (
    seq  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    gate text NOT NULL,
    at   double precision NOT NULL
);

CREATE INDEX flow_marks_gate ON flow_marks (gate, at);

CREATE TABLE step_slots (
    name   text NOT NULL,
    holder text NOT NULL,
    owner  text NOT NULL,
    until  double precision NOT NULL,
    PRIMARY KEY (name, holder)
);

CREATE INDEX step_slots_owner ON step_slots (owner);

-- Paused jobs (queue.jobs.x.pause()): a claim reads this tiny table in its transaction.
CREATE TABLE paused_jobs (
    job       text PRIMARY KEY,
    paused_at double precision NOT NULL
);
