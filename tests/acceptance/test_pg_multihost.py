"""Workers on two "hosts" share one PostgreSQL database; one host dies, the other finishes
its executions after the lease (issue 9: multi-host).

Each host is a network namespace of its own (``ip netns``) joined to this one by a veth
pair, with an address from the benchmarking range 198.18.0.0/15 (RFC 2544) that exists
only on that pair, and its own hostname (a UTS namespace), so qanat's same-host
dead-process reclaim cannot see the other host's processes die: only the lease can hand
their work over. A PostgreSQL server of this test's own listens on the host side of both
pairs and lets those two /30 networks in with the password. The namespaces, links and
server are created here and removed at the end; without the rights to create a
namespace (not root, or a kernel that refuses) the test is skipped saying so.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg
import pytest

from qanat import codec
from services import PASSWORD, USER, PostgresServer

if TYPE_CHECKING:
    from conftest import Project

from conftest import Worker

HOSTS_APP = r'''
import asyncio
import os
import socket
import time

import qanat
from qanat import job, run

DIR = os.environ["QANAT_TEST_DIR"]


def append(name, line):
    """One write with O_APPEND: lines from many processes never interleave."""
    fd = os.open(os.path.join(DIR, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


async def part(i, k):
    append("steps.log", f"{i} {k} {socket.gethostname()} {os.getpid()} {time.time()!r}")
    if k == 3:  # step 3 waits for the file "go" (at most 60 s)
        end = time.monotonic() + 60
        while not os.path.exists(os.path.join(DIR, "go")) and time.monotonic() < end:
            await asyncio.sleep(0.02)
    return k


@job
async def four_steps(i: int) -> int:
    total = 0
    for k in (1, 2, 3, 4):
        total += await run(f"s{k}", part, i, k)
    return i * 100 + total


queue = qanat.Queue(jobs=[four_steps], storage=os.environ["QANAT_TEST_STORAGE"], lease="3s")
'''

LEASE = 3.0
N = 6


@dataclass
class Host:
    """One network namespace with a veth pair to this namespace."""

    ns: str
    hostname: str
    server_addr: str  # the host side of the pair: where PostgreSQL listens
    addr: str  # the namespace side


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def hosts() -> Iterator[list[Host]]:
    """Two namespaces "qanat-a-<pid>" and "qanat-b-<pid>", each with a veth pair on a /30
    of 198.18.<x>.0/24; removed at the end."""
    if os.geteuid() != 0:
        pytest.skip("creating network namespaces needs root")
    if subprocess.run(["which", "ip"], capture_output=True).returncode != 0:
        pytest.skip("the ip command (iproute2) is not installed")
    tag = os.getpid() % 10_000
    third = 1 + os.getpid() % 250
    made: list[Host] = []
    try:
        for n, name in enumerate(("a", "b")):
            ns = f"qanat-{name}-{tag}"
            res = subprocess.run(["ip", "netns", "add", ns], capture_output=True, text=True)
            if res.returncode != 0:
                if not made:
                    pytest.skip(f"the kernel refused a network namespace: {res.stderr.strip()}")
                raise RuntimeError(f"ip netns add {ns}: {res.stderr.strip()}")
            base = 4 * n
            host = Host(
                ns, f"qanat-host-{name}", f"198.18.{third}.{base + 1}", f"198.18.{third}.{base + 2}"
            )
            made.append(host)
            outer, inner = f"qv{name}{tag}h", f"qv{name}{tag}n"
            _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            _ip("link", "set", inner, "netns", ns)
            _ip("addr", "add", f"{host.server_addr}/30", "dev", outer)
            _ip("link", "set", outer, "up")
            _ip("-n", ns, "addr", "add", f"{host.addr}/30", "dev", inner)
            _ip("-n", ns, "link", "set", inner, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield made
    finally:
        for host in made:
            # deleting the namespace deletes its end of the pair, and so the pair
            subprocess.run(["ip", "netns", "del", host.ns], capture_output=True, timeout=30)
        for name in ("a", "b"):
            subprocess.run(
                ["ip", "link", "del", f"qv{name}{tag}h"], capture_output=True, timeout=30
            )


@pytest.fixture
def server(hosts: list[Host]) -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test, on 127.0.0.1 and the host side of both pairs."""
    srv = PostgresServer(
        listen=tuple(h.server_addr for h in hosts),
        hba=tuple(f"{h.addr}/32" for h in hosts),
    )
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


def url_via(addr: str, port: int) -> str:
    return f"postgresql://{USER}:{PASSWORD}@{addr}:{port}/postgres?schema=multihost"


def start_worker(project: Project, host: Host, port: int, concurrency: int) -> Worker:
    """``python -m qanat worker`` inside ``host``'s namespace, with its hostname, reaching
    PostgreSQL over its veth pair."""
    n = len(project.workers)
    out, err = project.root / f"worker{n}.out", project.root / f"worker{n}.err"
    cmd = [
        "ip", "netns", "exec", host.ns,
        "unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', host.hostname,
        sys.executable, "-m", "qanat", "worker", "hostsapp:queue",
        "--concurrency", str(concurrency),
    ]  # fmt: skip
    env = project.env(QANAT_TEST_STORAGE=url_via(host.server_addr, port))
    with out.open("wb") as fo, err.open("wb") as fe:
        proc = subprocess.Popen(cmd, cwd=project.root, env=env, stdout=fo, stderr=fe)
    w = Worker(proc, out, err)
    project.workers.append(w)
    return w


def namespace_pids(ns: str) -> set[int]:
    res = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=30)
    return {int(p) for p in res.stdout.split()}


def client_addrs(port: int) -> set[str]:
    with psycopg.connect(f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/postgres") as conn:
        rows = conn.execute(
            "SELECT DISTINCT host(client_addr) FROM pg_stat_activity WHERE client_addr IS NOT NULL"
        ).fetchall()
    return {r[0] for r in rows}


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_host_killed_its_executions_finish_on_the_other_after_the_lease(
    project: Project, hosts: list[Host], server: PostgresServer
) -> None:
    a, b = hosts
    project.storage_url = url_via("127.0.0.1", server.port)  # this process: the loopback
    (project.root / "hostsapp.py").write_text(HOSTS_APP)
    on_a = [start_worker(project, a, server.port, 3) for _ in range(2)]
    for w in on_a:
        w.wait_ready(timeout=60)
    module = project.load(project.root / "hostsapp.py", f"hostsapp_{id(project)}")

    async def enqueue(q: object) -> list[str]:
        return [e.id for e in await q.jobs.four_steps.start_many([{"i": i} for i in range(N)])]  # type: ignore[attr-defined]

    ids = project.client(enqueue, app=module.queue)

    def rows() -> list[list[str]]:
        return [line.split() for line in project.lines("steps.log")]

    # host a runs all six, each blocked in step 3
    project.wait_until(
        lambda: {int(r[0]) for r in rows() if r[1] == "3"} == set(range(N)),
        timeout=60,
        what="every execution in step 3 on host a",
    )
    assert {r[2] for r in rows()} == {a.hostname}

    on_b = start_worker(project, b, server.port, 10)
    on_b.wait_ready(timeout=60)
    assert {a.addr, b.addr} <= client_addrs(server.port), (
        "the workers did not come over the veth pairs"
    )

    pids = namespace_pids(a.ns)
    assert {w.pid for w in on_a} <= pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    for w in on_a:
        w.proc.wait(10)
    killed = time.time()
    assert not namespace_pids(a.ns), "a process of host a survived"
    project.touch("go")

    for eid in ids:
        rec = project.wait_finished(eid, timeout=60)
        assert rec.status == "completed", rec.error
        assert codec.loads(rec.output or "null") == int(codec.loads(rec.input)["i"]) * 100 + 10

    runs = Counter((int(r[0]), int(r[1])) for r in rows())
    # steps 1 and 2 were checkpointed on host a: never run again
    for i in range(N):
        assert runs[(i, 1)] == 1 and runs[(i, 2)] == 1, runs
        # step 3 was in flight when host a died: run there, then once on host b
        assert runs[(i, 3)] == 2 and runs[(i, 4)] == 1, runs
    by_b = [r for r in rows() if r[2] == b.hostname]
    assert {(int(r[0]), int(r[1])) for r in by_b} == {(i, k) for i in range(N) for k in (3, 4)}
    assert {int(r[3]) for r in by_b} == {on_b.pid}
    # handed over by the lease, not at once: a lease lasts LEASE s from its last renewal
    # (every LEASE/3 s), so it lapsed at least 2/3 of it after the kill
    first_on_b = min(float(r[4]) for r in by_b)
    assert first_on_b >= killed + LEASE * 2 / 3 - 0.1, first_on_b - killed
    for eid in ids:
        rec = project.get(eid)
        # claimed twice (a, then b), one attempt: a recovery, not a retry
        assert rec.claims == 2 and rec.attempt == 1, rec
