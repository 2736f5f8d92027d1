-- qanat SQLite schema, version 4: the executions an event woke (its dict waiters that
-- received it), listed with the event like the executions it triggered.
CREATE TABLE event_wakes (
    event_id     TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    PRIMARY KEY (event_id, execution_id)
) WITHOUT ROWID;
