"""Services the test command starts: a real PostgreSQL 15 server for the session.

``postgres_url`` (a session fixture) runs ``initdb`` into a temporary folder and starts
``postgres`` bound to 127.0.0.1 on a free port, as the ``postgres`` OS user when the
tests run as root (PostgreSQL refuses to run as root), with password authentication.
Its URL is exported as ``QANAT_TEST_POSTGRES_URL`` so worker subprocesses reach it too.
The server stops when the session ends. A machine without the binaries fails the tests
that need it, naming what is missing: a missing server is never a skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

#: Where initdb/postgres/pg_ctl are: $QANAT_TEST_PG_BIN, else /usr/local/bin (this
#: machine's image), else Debian's postgresql-15 package (which scripts/test.sh installs).
BIN = Path(
    os.environ.get("QANAT_TEST_PG_BIN")
    or next(
        (d for d in ("/usr/local/bin", "/usr/lib/postgresql/15/bin") if Path(d, "initdb").exists()),
        "/usr/local/bin",
    )
)
USER = "postgres"
PASSWORD = "qanat-test-pw"
ENV_URL = "QANAT_TEST_POSTGRES_URL"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _as_postgres(cmd: list[str]) -> list[str]:
    """Run as the postgres OS user when we are root (initdb and postgres refuse root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", USER, "--", *cmd]
    return cmd


READY = "ready to accept connections"


def _ready(
    port: int, proc: subprocess.Popen[bytes], log: Path, seen: int, timeout: float = 30.0
) -> None:
    """Wait for the server's ``seen + 1``-th "ready" line in its log (a restart appends)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"postgres exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                if log.read_text().count(READY) > seen:
                    return
        except OSError:
            pass
        time.sleep(0.05)  # polling a socket for the server's start, bounded by timeout
    raise RuntimeError(f"postgres did not start in {timeout}s: {log.read_text()[-2000:]}")


class PostgresServer:
    """One throw-away PostgreSQL cluster."""

    def __init__(
        self,
        listen: tuple[str, ...] = (),
        hba: tuple[str, ...] = (),
        settings: dict[str, str] | None = None,
    ) -> None:
        """``listen``: addresses to listen on besides 127.0.0.1; ``hba``: networks (CIDR)
        allowed in with the password besides the loopback; ``settings``: extra ``-c
        name=value`` server settings (the benchmarks' ``--pg-setting``)."""
        self.settings = dict(settings or {})
        for tool in ("initdb", "postgres"):
            if not (BIN / tool).exists():
                raise RuntimeError(
                    f"PostgreSQL 15 is needed by the tests: {BIN / tool} is missing "
                    "(install postgresql-15 or set QANAT_TEST_PG_BIN)"
                )
        self.root = Path(tempfile.mkdtemp(prefix="qanat-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.listen = ("127.0.0.1", *listen)
        if os.geteuid() == 0:
            shutil.chown(self.root, USER)
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if os.geteuid() == 0:
            shutil.chown(pwfile, USER)
        subprocess.run(
            _as_postgres(
                [str(BIN / "initdb"), "-D", str(self.data), "-U", USER, "--auth=scram-sha-256",
                 f"--pwfile={pwfile}", "--no-sync", "-E", "UTF8", "--locale=C"]
            ),
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        if hba:
            with (self.data / "pg_hba.conf").open("a") as conf:
                for net in hba:
                    conf.write(f"host all all {net} scram-sha-256\n")

    @property
    def url(self) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        seen = self.log.read_text().count(READY) if self.log.exists() else 0
        log = open(self.log, "ab")
        if os.geteuid() == 0:
            shutil.chown(self.log, USER)
        self.proc = subprocess.Popen(
            _as_postgres(
                [str(BIN / "postgres"), "-D", str(self.data), "-h", ",".join(self.listen),
                 "-p", str(self.port), "-k", str(self.root), "-c", "max_connections=300",
                 "-c", "fsync=on", "-c", "synchronous_commit=on",
                 *(a for k, v in self.settings.items() for a in ("-c", f"{k}={v}"))]
            ),
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        _ready(self.port, self.proc, self.log, seen)

    def restart(self) -> None:
        """Stop at once, as a crash would (SIGQUIT: immediate shutdown, no checkpoint),
        then start again on the same port and data."""
        assert self.proc is not None
        self._signal(signal.SIGQUIT)
        self.proc.wait(30)
        self.start()

    def crash(self) -> None:
        """``pg_ctl stop -m immediate`` (run as the postgres OS user): every backend
        killed at once, no shutdown checkpoint, as a crash would; ``start()`` brings
        the server back on the same port and data (together: ``pg_ctl restart -m
        immediate``, with the outage between them in the caller's hands)."""
        assert self.proc is not None
        subprocess.run(
            _as_postgres([str(BIN / "pg_ctl"), "stop", "-D", str(self.data), "-m", "immediate"]),
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        self.proc.wait(30)

    def _signal(self, sig: int) -> None:
        """Signal the postmaster itself (``proc`` may be ``runuser``, which would not
        pass every signal on)."""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, sig)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self._signal(signal.SIGINT)  # fast shutdown
            except (OSError, ValueError):
                self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server (started on first use, stopped at the end)."""
    server = PostgresServer()
    try:
        server.start()
        os.environ[ENV_URL] = server.url
        yield server
    finally:
        os.environ.pop(ENV_URL, None)
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of the session's PostgreSQL server."""
    return postgres_server.url


# --- Redis ------------------------------------------------------------------------------

REDIS_ENV_URL = "QANAT_TEST_REDIS_URL"


class RedisServer:
    """One throw-away redis-server: 127.0.0.1, a free port, AOF on, its own folder.

    ``fsync``: ``appendfsync`` (``everysec`` by default, ``always`` for the tests that
    kill it and count what survived). ``crash()`` is SIGKILL; ``start()`` again brings it
    back on the same port and folder, replaying its AOF."""

    def __init__(self, fsync: str = "everysec", password: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is needed by the tests and is missing (apt-get install redis-server)"
            )
        self.binary = binary
        self.root = Path(tempfile.mkdtemp(prefix="qanat-redis-"))
        self.port = _free_port()
        self.fsync = fsync
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.root / "redis.log"

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--bind", "127.0.0.1", "--port", str(self.port),
                "--dir", str(self.root), "--appendonly", "yes", "--appendfsync", self.fsync,
                "--save", "", "--logfile", str(self.log), "--daemonize", "no",
                "--maxmemory-policy", "noeviction"]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        end = time.monotonic() + 30
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                text = self.log.read_text()[-2000:] if self.log.exists() else ""
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {text}")
            if self.log.exists() and "Ready to accept connections" in self.log.read_text():
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                        return
                except OSError:
                    pass
            time.sleep(0.02)  # polling the log for the server's start, bounded by the timeout
        raise RuntimeError("redis-server did not start in 30s")

    def crash(self) -> None:
        """SIGKILL: no shutdown, no last AOF flush beyond what fsync policy did."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(30)
        if self.log.exists():  # the next start looks for a fresh "Ready" line
            self.log.rename(self.root / f"redis.{time.monotonic_ns()}.log")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """The session's redis-server (started on first use, stopped at the end)."""
    server = RedisServer()
    try:
        server.start()
        os.environ[REDIS_ENV_URL] = server.url
        yield server
    finally:
        os.environ.pop(REDIS_ENV_URL, None)
        server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    """The URL of the session's redis-server."""
    return redis_server.url
