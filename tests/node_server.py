"""A ``qanat serve`` subprocess for tests: a real node on a free port over a SQLite
file, that a test can kill -9 and start again on the same port."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx

from services import _free_port

TOKEN = "node-test-token"


class NodeServer:
    """``python -m qanat serve APP`` with storage ``db`` (through ``QANAT_TEST_STORAGE``,
    which the test apps read), bound to ``host`` with ``token``."""

    def __init__(
        self,
        root: Path,
        db: Path,
        *,
        app: str = "app:queue",
        host: str = "127.0.0.1",
        token: str | None = TOKEN,
        env: dict[str, str] | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.root = root
        self.db = db
        self.app = app
        self.host = host
        self.token = token
        self.port = _free_port()
        self.base_env = dict(env if env is not None else os.environ)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "node.err"
        self.starts = 0
        #: (certificate, key): served over TLS (``--ssl-certfile``/``--ssl-keyfile``)
        self.tls = tls

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "qanat", "serve", self.app, "--host", self.host]
        if self.tls is not None:
            cmd += ["--ssl-certfile", str(self.tls[0]), "--ssl-keyfile", str(self.tls[1])]
        return [*cmd, "--port", str(self.port), "--log-level", "info"]

    def start(self, timeout: float = 30.0) -> None:
        env = {**self.base_env, "QANAT_TEST_STORAGE": f"sqlite:///{self.db}"}
        env.setdefault("QANAT_TEST_DIR", str(self.root))
        env.setdefault("QANAT_TEST_DB", str(self.db))
        env.pop("QANAT_TOKEN", None)
        if self.token is not None:
            env["QANAT_TOKEN"] = self.token
        env["PYTHONPATH"] = str(self.root) + os.pathsep + env.get("PYTHONPATH", "")
        self.starts += 1
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                self.command(), cwd=self.root, env=env, stdout=err, stderr=err
            )
        self.wait_up(timeout)

    def wait_up(self, timeout: float) -> None:
        headers = {"authorization": f"Bearer {self.token}"} if self.token else {}
        end = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"qanat serve exited:\n{self.log.read_text()}")
            try:
                verify = ssl.create_default_context(cafile=self.tls[0]) if self.tls else True
                r = httpx.get(
                    self.url + "/node/v1/hello", headers=headers, timeout=2, verify=verify
                )
                if r.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > end:
                raise AssertionError(f"qanat serve not up in {timeout}s:\n{self.log.read_text()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """kill -9, and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> int | None:
        """SIGTERM (a graceful stop); the exit status, None if it had to be killed."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                return self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                return None
        return self.proc.returncode


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0
