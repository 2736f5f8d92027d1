"""The SQL core shared by the SQLite and PostgreSQL backends.

One copy of every operation, as functions of a connection, grouped by concept:

* ``records``: columns in record order, row ↔ record, the owner check;
* ``executions``: enqueue, finish, retry, suspend, mark, release, progress, logs, workers;
* ``claims``: the claim, ``has_ready``, lease renewal;
* ``steps``: checkpoints (one by one and in bulk), reading steps and logs;
* ``control``: cancel (with descendants), pause, resume, restart, wake;
* ``events`` and ``pipes``: the event log and waiters; sends and waits;
* ``flow`` and ``parking``: flow-control state for the rules of ``storage/flow.py``;
* ``queries``: listing, cache look-ups, stats, retention;
* ``writer``: the connection threads and the group commit;
* ``backend``: ``SqlStorage``, the contract over all of the above;
* ``dialect``: the hooks where SQLite and PostgreSQL differ.
"""
