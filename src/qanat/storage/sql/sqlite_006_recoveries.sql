-- qanat SQLite schema, version 6: poison pills (see Storage.claim and Storage.enter_step).

-- Claims that took an execution from an owner that never let it go (its worker died or
-- lost its lease) since its last checkpoint, and the step a recovered execution was
-- about to run: the WorkerLost error of an execution that kills its workers names it.
ALTER TABLE executions ADD COLUMN recoveries INTEGER NOT NULL DEFAULT 0;
ALTER TABLE executions ADD COLUMN step_in_flight TEXT;
