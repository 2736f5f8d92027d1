"""The orchestration node with real processes (issue 10): ``qanat serve`` over SQLite,
HTTP workers in network namespaces of their own that reach only the node, and the
faults: a worker killed mid-step, a worker frozen past its lease, the node killed with
-9 and started again, a wrong token, a non-loopback bind without a token.

The namespaces are those of the multi-host PostgreSQL test (``test_pg_multihost``):
veth pairs to this namespace, a hostname each. A worker also gets a mount namespace
with a tmpfs over the node's database directory: it cannot open the SQLite file, only
the node over HTTP.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from conftest import Worker
from test_pg_multihost import HOSTS_APP, Host, hosts, namespace_pids

import qanat
from node_server import TOKEN, NodeServer
from qanat import codec
from qanat.errors import StorageError
from qanat.storage.http import HttpStorage

if TYPE_CHECKING:
    from conftest import Project

__all__ = ["hosts"]  # the namespaces fixture, shared with test_pg_multihost

NODE_APP = (
    HOSTS_APP.replace("queue = qanat.Queue(", "_unused = dict(")
    + r"""

async def wait_go(i):
    append("whose.log", f"{i} {socket.gethostname()} {os.getpid()}")
    end = time.monotonic() + 60
    while not os.path.exists(os.path.join(DIR, "go")) and time.monotonic() < end:
        await asyncio.sleep(0.01)
    return i


@job
async def whose(i: int) -> str:
    await run("wait", wait_go, i)
    return socket.gethostname()


queue = qanat.Queue(
    jobs=[four_steps, whose],
    storage=os.environ["QANAT_TEST_STORAGE"],
    lease=os.environ.get("QANAT_TEST_LEASE", "2s"),
)
"""
)
LEASE = 2.0
N = 4


def _setup(project: Project) -> NodeServer:
    """The app, and a node on all addresses (so with the token) over db/node.db."""
    (project.root / "hostsapp.py").write_text(NODE_APP)
    (project.root / "db").mkdir()
    node = NodeServer(project.root, project.root / "db" / "node.db", app="hostsapp:queue")
    node.host = "0.0.0.0"
    node.start()
    project.storage_url = node.url
    os.environ["QANAT_TOKEN"] = TOKEN
    return node


def _in_host(host: Host, project: Project, *argv: str) -> list[str]:
    """A command line run in ``host``'s network namespace, with its hostname and the
    node's database directory hidden under a tmpfs."""
    script = 'hostname "$0" && mount -t tmpfs tmpfs "$1" && shift && exec "$@"'
    return [
        "ip", "netns", "exec", host.ns, "unshare", "--uts", "--mount", "sh", "-c", script,
        host.hostname, str(project.root / "db"), *argv,
    ]  # fmt: skip


def _worker(project: Project, host: Host, node: NodeServer, concurrency: int) -> Worker:
    n = len(project.workers)
    out, err = project.root / f"worker{n}.out", project.root / f"worker{n}.err"
    cmd = _in_host(
        host, project, sys.executable, "-m", "qanat", "worker", "hostsapp:queue",
        "--concurrency", str(concurrency),
    )  # fmt: skip
    env = project.env(QANAT_TEST_STORAGE=f"http://{host.server_addr}:{node.port}")
    with out.open("wb") as fo, err.open("wb") as fe:
        proc = subprocess.Popen(cmd, cwd=project.root, env=env, stdout=fo, stderr=fe)
    w = Worker(proc, out, err)
    project.workers.append(w)
    return w


def _kill_host(host: Host) -> None:
    pids = namespace_pids(host.ns)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_http_workers_on_two_hosts_survive_a_kill_and_a_freeze(
    project: Project, hosts: list[Host]
) -> None:
    a, b = hosts
    node = _setup(project)
    try:
        # what a worker's namespace sees: no database file, no other host, the node
        probe = _in_host(a, project, "sh", "-c", f'ls -A "$0"; ping -c1 -W1 {b.addr}', "db")
        seen = subprocess.run(probe, capture_output=True, text=True, timeout=30)
        assert "node.db" not in seen.stdout and seen.returncode != 0, seen
        module = project.load(project.root / "hostsapp.py", f"nodehosts_{id(project)}")

        # 1. SIGKILL mid-step: the other host finishes, checkpointed steps are not re-run
        on_a = _worker(project, a, node, 4)
        on_a.wait_ready(timeout=60)

        async def enqueue(q: object) -> list[str]:
            jobs = q.jobs.four_steps  # type: ignore[attr-defined]
            return [e.id for e in await jobs.start_many([{"i": i} for i in range(N)])]

        ids = project.client(enqueue, app=module.queue)

        def rows() -> list[list[str]]:
            return [line.split() for line in project.lines("steps.log")]

        project.wait_until(
            lambda: {int(r[0]) for r in rows() if r[1] == "3"} == set(range(N)),
            timeout=60,
            what="every execution in step 3 on host a",
        )
        on_b = _worker(project, b, node, 10)
        on_b.wait_ready(timeout=60)
        _kill_host(a)
        on_a.proc.wait(10)
        project.touch("go")
        for eid in ids:
            rec = project.wait_finished(eid, timeout=60)
            assert rec.status == "completed", rec.error
            assert codec.loads(rec.output or "null") == int(codec.loads(rec.input)["i"]) * 100 + 10
            assert rec.claims == 2 and rec.attempt == 1, rec
        runs = Counter((int(r[0]), int(r[1])) for r in rows())
        for i in range(N):
            assert runs[(i, 1)] == 1 and runs[(i, 2)] == 1, runs  # checkpointed on a
            assert runs[(i, 3)] == 2 and runs[(i, 4)] == 1, runs  # in flight when a died
        assert {r[2] for r in rows() if r[1] == "4"} == {b.hostname}

        # 2. SIGSTOP past the lease, SIGCONT: the late report is refused (409), the
        # result stays the other worker's
        (project.root / "go").unlink()
        on_b.signal(signal.SIGSTOP)  # b takes nothing until a holds the execution
        on_a = _worker(project, a, node, 4)
        on_a.wait_ready(timeout=60)
        [eid] = project.client(_start_whose, app=module.queue)
        project.wait_until(
            lambda: [x.split()[1] for x in project.lines("whose.log")] == [a.hostname],
            timeout=30,
            what="host a in the step",
        )
        on_a.signal(signal.SIGSTOP)  # frozen with the execution, past its lease
        on_b.signal(signal.SIGCONT)
        project.wait_until(
            lambda: [x.split()[1] for x in project.lines("whose.log")] == [a.hostname, b.hostname],
            timeout=30,
            what="host b took it over after a's lease",
        )
        project.touch("go")
        rec = project.wait_finished(eid, timeout=30)
        assert rec.status == "completed" and codec.loads(rec.output or "null") == b.hostname
        on_a.signal(signal.SIGCONT)  # a's step ends too and reports late
        project.wait_until(
            lambda: f"409 for checkpoint of execution {eid}" in node.log.read_text(),
            timeout=30,
            what="the node refusing a's late checkpoint",
        )
        after = project.get(eid)
        assert after.output == rec.output and after.completed_at == rec.completed_at
        assert after.claims == 2, after
        assert [codec.loads(s.result or "null") for s in project.steps(eid)] == [7]
        assert on_a.proc.poll() is None, "the refused worker carries on"
    finally:
        project.stop_all()  # before the node: stopping workers hand work back to it
        node.stop()
        os.environ.pop("QANAT_TOKEN", None)


async def _start_whose(q: object) -> list[str]:
    e = await q.jobs.whose.start(7)  # type: ignore[attr-defined]
    return [e.id]


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("project", ["node"], indirect=True)
def test_node_killed_mid_flight_and_restarted_everything_completes_once(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = project.node
    assert node is not None
    monkeypatch.setenv("QANAT_TEST_LEASE", "20s")  # the node is down for less than this
    (project.root / "hostsapp.py").write_text(NODE_APP)
    module = project.load(project.root / "hostsapp.py", f"noderestart_{id(project)}")
    project.worker("--concurrency", "8", app="hostsapp:queue")

    async def enqueue(q: object) -> list[str]:
        jobs = q.jobs.four_steps  # type: ignore[attr-defined]
        return [e.id for e in await jobs.start_many([{"i": i} for i in range(8)])]

    ids = project.client(enqueue, app=module.queue)

    def rows() -> list[list[str]]:
        return [line.split() for line in project.lines("steps.log")]

    project.wait_until(
        lambda: {int(r[0]) for r in rows() if r[1] == "3"} == set(range(8)),
        timeout=60,
        what="all eight in step 3",
    )
    node.kill()  # kill -9 mid-flight: the reports of steps 3 and 4 are yet to come
    project.touch("go")  # the steps end while the node is down: their reports retry
    node.start()  # same port, same file
    for eid in ids:
        rec = project.wait_finished(eid, timeout=60)
        assert rec.status == "completed", rec.error
        assert codec.loads(rec.output or "null") == int(codec.loads(rec.input)["i"]) * 100 + 10
        assert rec.attempt == 1 and rec.claims == 1, rec  # never taken over, never retried
    runs = Counter((int(r[0]), int(r[1])) for r in rows())
    assert runs == {(i, k): 1 for i in range(8) for k in (1, 2, 3, 4)}, runs  # each step once
    assert node.starts == 2


@pytest.mark.timeout(90)
@pytest.mark.parametrize("project", ["node"], indirect=True)
def test_wrong_token_is_refused_everywhere_with_a_clear_error(project: Project) -> None:
    assert project.node is not None
    url = project.node.url
    for token in (None, "wrong"):
        headers = {"authorization": f"Bearer {token}"} if token else {}
        for method, path in (
            ("GET", "/node/v1/hello"),
            ("POST", "/node/v1/claim"),
            ("POST", "/node/v1/report"),
            ("POST", "/node/v1/call/get"),
            ("GET", "/node/v1/watch"),
            ("GET", "/api/health"),
            ("GET", "/"),
        ):
            r = httpx.request(method, url + path, headers=headers, content=b"{}", timeout=10)
            assert r.status_code == 401, (method, path, r.status_code)
            if path == "/":  # the dashboard: its own sign-in, answered in text
                assert "sign in" in r.text and "execution" not in r.text.lower()
            else:
                assert "bearer token" in r.json()["error"]
    # the token in the URL's query is no token
    r = httpx.get(url + f"/node/v1/hello?token={TOKEN}", timeout=10)
    assert r.status_code == 401
    wrong = project.env(QANAT_TOKEN="wrong")
    res = project.qanat("ls", env=wrong)
    assert res.returncode != 0 and "refused the token (401" in res.stderr, res.stderr
    w = subprocess.run(
        [sys.executable, "-m", "qanat", "worker", "app:queue"],
        cwd=project.root,
        env=wrong,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert w.returncode != 0 and "refused the token (401" in w.stderr, w.stderr
    assert project.qanat("ls").returncode == 0  # the right token passes
    assert project.node.stop() == 0  # SIGTERM: a graceful stop


def test_non_loopback_bind_without_token_is_refused(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "QANAT_TOKEN"}
    (tmp_path / "napp.py").write_text(
        "import qanat\nqueue = qanat.Queue(storage='sqlite:///n.db')\n"
    )
    env["PYTHONPATH"] = str(tmp_path)
    res = subprocess.run(
        [sys.executable, "-m", "qanat", "serve", "napp:queue", "--host", "0.0.0.0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2, res
    assert "refusing to bind 0.0.0.0 without a token" in res.stderr
    assert not (tmp_path / "n.db").exists()  # refused before opening anything


@pytest.fixture
def tls_node(tmp_path: Path) -> Iterator[tuple[NodeServer, Path]]:
    """A node over TLS with a self-signed certificate for 127.0.0.1, and that certificate."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    (tmp_path / "tlsapp.py").write_text(
        "import os, qanat\nqueue = qanat.Queue(storage=os.environ['QANAT_TEST_STORAGE'])\n"
    )
    node = NodeServer(tmp_path, tmp_path / "tls.db", app="tlsapp:queue", tls=(cert, key))
    try:
        node.start()
        yield node, cert
    finally:
        node.kill()


@pytest.mark.timeout(90)
async def test_over_tls_a_worker_and_a_client_reach_the_node_by_https(
    tls_node: tuple[NodeServer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    node, cert = tls_node
    assert node.url.startswith("https://")

    @qanat.job
    async def double(x: int) -> int:
        return 2 * x

    # this host trusts the node's certificate (as it would trust a private CA)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    async with qanat.Queue(jobs=[double], storage=node.url, token=TOKEN) as q:
        assert await q.jobs.double.run(21) == 42
        e = await q.jobs.double.start(2)
        assert await e.result(timeout=30) == 4 and await e.status() == "completed"
    # a client that does not trust it, and one speaking plain HTTP, hear why
    monkeypatch.delenv("SSL_CERT_FILE")
    with pytest.raises(StorageError, match="CERTIFICATE_VERIFY_FAILED"):
        await HttpStorage(node.url, TOKEN, retry_for=0).open()
    plain = node.url.replace("https://", "http://")
    with pytest.raises(StorageError, match=r"cannot reach the qanat node at http://127\.0\.0\.1"):
        await HttpStorage(plain, TOKEN, retry_for=0).open()
    assert node.stop() == 0  # SIGTERM: a graceful stop over TLS too
