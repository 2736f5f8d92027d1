-- qanat SQLite schema, version 6: reserved.
-- A placeholder so that version 7 (paused jobs) can be numbered apart from the
-- recoveries column being added at the same time on another branch as version 6.
-- When that migration is merged, it replaces this file (delete this one).
SELECT 1;
