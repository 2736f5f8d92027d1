"""A cross-process doorbell for one SQLite file: wake other processes after a commit.

SQLite has no notification channel, so without this a process notices other
processes' commits only by polling ``PRAGMA data_version``. With it:

* every process that listens binds a unix datagram socket, named at random, in a
  folder beside the database (``<db>.qanat-bell/``). When that folder cannot be used
  (not writable, or its socket paths would be too long for ``AF_UNIX``), it binds in
  ``<tempdir>/qanat-bell-<hash of the database's real path>/`` instead;
* the writer thread, after a commit that changed something, sends one byte, without
  blocking, to every socket in both folders except its own (:meth:`Doorbell.ring`).
  The listings are cached and re-read when a folder's mtime changes (or after a
  second). A socket nobody is bound to any more (its process died without closing)
  refuses the byte and is deleted;
* the listener is read by ``loop.add_reader`` on the event loop (no thread) and calls
  the registered callbacks. Commits of this process's own writer call them directly
  (not through the socket), ``LOCAL_DELAY`` later (``local_delay``: 0 in a node,
  whose commits are for other processes), one call pending at a time.

Ringing never blocks or fails a commit: errors are logged at debug level and the
other processes fall back to polling. The bell is only a hint; the listener still
confirms a change with ``PRAGMA data_version``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import socket
import stat
import tempfile
import time
from collections.abc import Callable

log = logging.getLogger("qanat")

SUFFIX = ".sock"
#: ``sun_path`` holds 108 bytes on Linux, 104 on macOS, including the final NUL.
MAX_PATH = 103
#: Re-read a folder's listing at least this often (coarse mtimes can hide a change).
RELIST_EVERY = 1.0
#: Commits of this process call its own listeners this much later (at most one call
#: pending): whatever needs them at once is woken directly by the engine, and an
#: immediate wake-up would compete with the work that commit just started.
LOCAL_DELAY = 0.001
#: A socket that refuses a ring is deleted only if it is older than this: a socket
#: being bound right now may briefly exist as a file before it can receive.
STALE_AFTER = 1.0


def bell_dirs(db_path: str) -> tuple[str, str]:
    """The folder beside the database and the fallback folder in the temp dir."""
    real = os.path.realpath(db_path)
    digest = hashlib.sha256(os.fsencode(real)).hexdigest()[:16]
    return real + ".qanat-bell", os.path.join(tempfile.gettempdir(), f"qanat-bell-{digest}")


class Doorbell:
    """The doorbell of one storage instance: a listener socket and a ringer."""

    def __init__(self, db_path: str) -> None:
        self.dirs = bell_dirs(db_path)
        #: seconds after an own commit that this process's listeners are called
        self.local_delay = LOCAL_DELAY
        # listening side: used on the event-loop thread
        self.path: str | None = None
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._callbacks: list[Callable[[], None]] = []
        self._local_pending = False
        # ringing side: used on the writer thread only
        self._out: socket.socket | None = None
        self._listings: dict[str, tuple[tuple[int, int], float, list[str]]] = {}

    # --- listening ------------------------------------------------------------------

    def listen(self, callback: Callable[[], None]) -> Callable[[], None] | None:
        """Call ``callback`` on the running loop after commits; None if no socket could be
        bound (the caller must then poll). Returns the function that stops it."""
        loop = asyncio.get_running_loop()
        if self._sock is None:
            sock = self._bind()
            if sock is None:
                return None
            self._sock, self._loop = sock, loop
            self._local_pending = False
            loop.add_reader(sock.fileno(), self._readable)
        elif loop is not self._loop:
            return None
        self._callbacks.append(callback)

        def stop() -> None:
            with contextlib.suppress(ValueError):
                self._callbacks.remove(callback)
            if not self._callbacks:
                self._unbind()

        return stop

    def _bind(self) -> socket.socket | None:
        name = secrets.token_hex(8) + SUFFIX
        for i, folder in enumerate(self.dirs):
            path = os.path.join(folder, name)
            if len(os.fsencode(path)) > MAX_PATH:
                continue
            for _ in range(3):  # the folder may be removed by a closing process meanwhile
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                try:
                    sock.setblocking(False)
                    os.makedirs(folder, exist_ok=True)
                    if i == 1:  # in the shared temp dir: only a folder of our own
                        st = os.lstat(folder)
                        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
                            raise PermissionError(f"{folder} is not a folder of this user")
                    sock.bind(path)
                except FileNotFoundError:
                    sock.close()
                    continue
                except OSError as exc:
                    sock.close()
                    log.debug("qanat: cannot bind the doorbell in %s: %s", folder, exc)
                    break
                self.path = path
                return sock
        return None

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            while sock.recv(64):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:  # pragma: no cover - a datagram socket rarely fails here
            log.debug("qanat: reading the doorbell failed: %s", exc)
        self._call()

    def _call(self) -> None:
        self._local_pending = False
        for cb in list(self._callbacks):
            try:
                cb()
            except Exception:
                log.exception("qanat: doorbell callback failed")

    def _unbind(self) -> None:
        sock, path, loop = self._sock, self.path, self._loop
        self._sock = self.path = self._loop = None
        self._callbacks.clear()
        if sock is None:
            return
        if loop is not None and not loop.is_closed():
            loop.remove_reader(sock.fileno())
        sock.close()
        if path is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)
            with contextlib.suppress(OSError):
                os.rmdir(os.path.dirname(path))  # only if it is empty

    def close(self) -> None:
        """Stop listening and delete the socket; call once the writer thread has ended."""
        self._unbind()
        if self._out is not None:
            self._out.close()
            self._out = None

    # --- ringing (writer thread) ---------------------------------------------------

    def ring(self, local: bool = True) -> None:
        """After a commit that changed something: wake every listener (this process's
        own only if ``local``). Never raises."""
        try:
            if local:
                self._ring_local()
            self._ring_others()
        except Exception as exc:
            log.debug("qanat: ringing the doorbell failed: %s", exc)

    def _ring_local(self) -> None:
        loop = self._loop
        if loop is None or self._local_pending:
            return
        self._local_pending = True
        try:
            if asyncio._get_running_loop() is loop:  # an inline commit: no wake-up needed
                if self.local_delay > 0:
                    loop.call_later(self.local_delay, self._call)
                else:
                    loop.call_soon(self._call)
            elif self.local_delay > 0:
                loop.call_soon_threadsafe(loop.call_later, self.local_delay, self._call)
            else:
                loop.call_soon_threadsafe(self._call)
        except RuntimeError:  # the loop is closed
            self._local_pending = False

    def _ring_others(self) -> None:
        out = self._out
        for folder in self.dirs:
            paths = self._others(folder)
            if not paths:
                continue
            if out is None:
                out = self._out = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                out.setblocking(False)
            for path in paths:
                try:
                    out.sendto(b"!", path)
                except (BlockingIOError, InterruptedError):
                    pass  # its queue is full: it has rings it has not read yet
                except ConnectionRefusedError:
                    self._stale(folder, path)
                except FileNotFoundError:
                    self._listings.pop(folder, None)
                except OSError as exc:
                    log.debug("qanat: ringing %s failed: %s", path, exc)

    def _others(self, folder: str) -> list[str]:
        """The paths of the sockets in ``folder`` but our own (listed again only when the
        folder changed, or after ``RELIST_EVERY``: a stat per ring, not a listing)."""
        try:
            st = os.stat(folder)
        except OSError:
            self._listings.pop(folder, None)
            return []
        stamp = (st.st_ino, st.st_mtime_ns)
        at = time.monotonic()
        cached = self._listings.get(folder)
        if cached is not None and cached[0] == stamp and at - cached[1] < RELIST_EVERY:
            return cached[2]
        try:
            names = [n for n in os.listdir(folder) if n.endswith(SUFFIX)]
        except OSError:
            names = []
        own = self.path
        paths = [p for p in (os.path.join(folder, n) for n in names) if p != own]
        self._listings[folder] = (stamp, at, paths)
        return paths

    def _stale(self, folder: str, path: str) -> None:
        """No socket is bound at ``path`` any more: its process is gone. Delete it."""
        try:
            if time.time() - os.lstat(path).st_mtime < STALE_AFTER:
                return
            os.unlink(path)
        except OSError:
            pass
        self._listings.pop(folder, None)
