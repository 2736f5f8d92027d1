-- qanat SQLite schema, version 9: the trace context of the code that started an
-- execution (a JSON object of W3C propagation headers), restored by the worker so its
-- spans join the caller's trace (SPEC §14). NULL when nothing was traced.
ALTER TABLE executions ADD COLUMN trace TEXT;
