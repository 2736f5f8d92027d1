-- qanat SQLite schema, version 5: flow control (see qanat.storage.flow).

-- An execution's flow-control rules (JSON), the concurrency-window gate whose slot it
-- holds while running, and the gate it is parked behind while it may not start.
ALTER TABLE executions ADD COLUMN flow TEXT;
ALTER TABLE executions ADD COLUMN slot TEXT;
ALTER TABLE executions ADD COLUMN gate TEXT;

-- The claim index also carries the window gate, so a claim can pass over (and park in
-- one statement) the due executions of a gate it found full without reading the table.
DROP INDEX executions_ready;
CREATE INDEX executions_ready
    ON executions (priority DESC, available_at, id, job, status, owner, slot)
    WHERE available_at IS NOT NULL AND status IN ('pending', 'running', 'waiting');

-- Running executions per window gate: the count a claim compares with the limit.
CREATE INDEX executions_slots ON executions (slot) WHERE status = 'running' AND slot IS NOT NULL;

-- Parked executions per gate, in the order they would have been claimed. A parked
-- execution is out of executions_ready (available_at IS NULL), so a claim never scans it.
CREATE INDEX executions_parked ON executions (gate, priority DESC, run_at, id)
    WHERE gate IS NOT NULL AND available_at IS NULL;

-- The state of each gate (see qanat.storage.flow.Gate) and when a parked execution
-- behind it may start (a rolling window opening).
CREATE TABLE gates (
    id       TEXT PRIMARY KEY,
    ref      TEXT,
    n        INTEGER NOT NULL DEFAULT 0,
    first_at REAL,
    last_at  REAL,
    wake_at  REAL
) WITHOUT ROWID;

CREATE INDEX gates_wake ON gates (wake_at) WHERE wake_at IS NOT NULL;

-- Start (rolling windows) and trigger (rate limits) times per gate.
CREATE TABLE flow_marks (
    seq  INTEGER PRIMARY KEY,
    gate TEXT NOT NULL,
    at   REAL NOT NULL
);

CREATE INDEX flow_marks_gate ON flow_marks (gate, at);

-- Holders of step-level concurrency slots, under a lease the worker's heartbeat renews.
CREATE TABLE step_slots (
    name   TEXT NOT NULL,
    holder TEXT NOT NULL,
    owner  TEXT NOT NULL,
    until  REAL NOT NULL,
    PRIMARY KEY (name, holder)
) WITHOUT ROWID;

CREATE INDEX step_slots_owner ON step_slots (owner);
