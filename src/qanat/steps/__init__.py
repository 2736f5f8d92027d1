"""Step functions: checkpointed units of work inside a job.

Each finds the running execution through a contextvar. A step's key is its name plus
an occurrence counter (``fetch``, ``fetch#2``); on replay a recorded step returns its
stored result (or raises its stored error) instead of running again.

One module per kind of step: ``run`` (and its retries), ``sleeps``, ``children``
(child executions), ``events`` (pipe send and waits), ``thread`` (``run`` in a
child process); ``records`` holds progress and log lines.
"""

from qanat.steps.children import start_child
from qanat.steps.events import (
    job_pipe,
    job_wait_step,
    send_step,
    wait_for_completion,
    wait_step,
)
from qanat.steps.records import log, progress
from qanat.steps.run import Step, run
from qanat.steps.sleeps import sleep, sleep_until
from qanat.steps.thread import thread

__all__ = [
    "Step",
    "job_pipe",
    "job_wait_step",
    "log",
    "progress",
    "run",
    "send_step",
    "sleep",
    "sleep_until",
    "start_child",
    "thread",
    "wait_for_completion",
    "wait_step",
]
