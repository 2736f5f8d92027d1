"""Housekeeping that must run once (gate refill, retention, cron catch-up) is done by
one elected worker; when it dies, another takes over after its lease."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Project

LEADS = "leads housekeeping"
FOLLOWS = "follows: another worker leads the housekeeping"


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize("project", ["sqlite", "postgres", "redis"], indirect=True)
def test_one_worker_leads_and_another_takes_over_when_it_dies(project: Project) -> None:
    a = project.worker("--log-level", "info")
    project.wait_until(lambda: LEADS in a.stderr(), what="the first worker leads")
    b = project.worker("--log-level", "info")
    project.wait_until(lambda: FOLLOWS in b.stderr(), what="the second one follows")
    assert LEADS not in b.stderr()

    a.kill()  # no resign: its lease must lapse (10 s of the storage's clock)
    killed = time.monotonic()
    project.wait_until(lambda: LEADS in b.stderr(), timeout=30, what="takeover")
    assert time.monotonic() - killed < 15  # LEAD_LEASE + one housekeeping period (+ slack)

    # a leader that stops resigns: the next worker leads at once, with no lease to wait
    c = project.worker("--log-level", "info")
    project.wait_until(lambda: FOLLOWS in c.stderr(), what="the third one follows")
    b.signal(15)
    assert b.wait(20) == 0
    stopped = time.monotonic()
    project.wait_until(lambda: LEADS in c.stderr(), timeout=30, what="handover")
    assert time.monotonic() - stopped < 5
