"""The process pool that runs ``thread`` steps: one child per task at a time, crash-proof.

A worker owns one ``ProcessPool``. Each child is a long-lived process started with
``forkserver`` (``spawn`` where that is missing; never ``fork`` of the threaded worker)
and talks to the worker over its own pipe: the worker sends a task (its memory limit,
then the pickled function and arguments), the child runs it and sends back one reply.
Tasks wait in the parent until a child is free, so a child that dies takes down only
the task it was running, which fails with ``ThreadCrashed``; the next task gets a new
child. (``concurrent.futures.ProcessPoolExecutor`` breaks every pending task when one
child dies, which is why this is not one.) A task that is cancelled or times out kills
its child, and the worker waits for it to be gone before the step ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import inspect
import multiprocessing
import os
import pickle
import resource
import signal
import threading
import traceback
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection, wait
from typing import Any

from qanat.errors import ThreadCrashed
from qanat.sizes import format_size

#: How children are started: a fork server (fast, and the server is a clean process
#: with no threads), or a fresh interpreter where the platform has no fork server.
START_METHOD = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
#: Modules the fork server imports once, so each child starts with them loaded.
_PRELOAD = ["qanat.engine.isolate"]

_OK, _ERROR, _OUT_OF_MEMORY = "ok", "error", "memory"


class ProcessPool:
    """Up to ``size`` reusable child processes running one task each at a time."""

    def __init__(self, size: int, method: str = START_METHOD) -> None:
        self.size = size
        self.start_method = method
        self._ctx = multiprocessing.get_context(method)
        if method == "forkserver":
            preload = ["__main__", *_PRELOAD]
            self._ctx.set_forkserver_preload(preload)
        self._idle: list[_Child] = []
        self._busy: set[_Child] = set()
        self._count = 0  # children alive or being started
        self._waiters: deque[asyncio.Future[None]] = deque()
        # blocking pipe reads and process starts happen here, never on the event loop
        self._io = ThreadPoolExecutor(max_workers=size, thread_name_prefix="qanat-isolate")
        self._closed = False

    async def call(
        self,
        fn: Callable[..., Any],
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        *,
        memory: int | None = None,
        what: str = "thread step",
    ) -> Any:
        """``fn(*args, **kwargs)`` in a child process; its return value, or its exception.

        Raises:
            TypeError: ``fn``, its arguments or its result cannot be pickled.
            ThreadCrashed: the child died (signal, exit, ``MemoryError`` at ``memory``).
        """
        task = _pickled_task(fn, args, kwargs, what)
        child = await self._checkout()
        keep = False
        try:
            loop = asyncio.get_running_loop()
            reply = await loop.run_in_executor(self._io, child.exchange, memory, task)
            if reply is None:
                raise ThreadCrashed(f"{what}: {child.describe_death(fn)}")
            kind, value, trace = _unpickled_reply(reply, what)
            if kind == _OUT_OF_MEMORY:
                at = "" if memory is None else f" at memory={format_size(memory)}"
                raise ThreadCrashed(
                    f"{what}: the child process (pid {child.pid}) running {_name(fn)} ran out "
                    f"of memory (MemoryError{at})"
                )
            keep = True
            if kind == _ERROR:
                if trace:
                    value.add_note(f"in the thread child process (pid {child.pid}):\n{trace}")
                raise value
            return value
        finally:
            if keep and not self._closed:
                self._checkin(child)
            else:
                self._discard(child)

    def pids(self) -> list[int]:
        """Process ids of the live children (idle and busy)."""
        return [c.pid for c in (*self._idle, *self._busy)]

    def shutdown(self) -> None:
        """Kill every child (idle or busy) and stop the pool; calls in flight then fail."""
        self._closed = True
        for child in (*self._idle, *self._busy):
            child.kill()
        self._idle.clear()
        self._busy.clear()
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)
        self._io.shutdown(wait=False, cancel_futures=True)

    # --- children ---------------------------------------------------------------------

    async def _checkout(self) -> _Child:
        loop = asyncio.get_running_loop()
        while True:
            if self._closed:
                raise RuntimeError("the worker's process pool is shut down")
            while self._idle:
                child = self._idle.pop()
                if child.alive():
                    self._busy.add(child)
                    return child
                self._discard_idle(child)  # died while idle (killed from outside)
            if self._count < self.size:
                self._count += 1
                try:
                    child = await loop.run_in_executor(self._io, _Child, self._ctx)
                except BaseException:
                    self._count -= 1
                    self._wake_one()
                    raise
                if self._closed:
                    child.kill()
                    continue
                self._busy.add(child)
                return child
            fut = loop.create_future()
            self._waiters.append(fut)
            try:
                await fut
            except BaseException:
                if fut.done() and not fut.cancelled():
                    self._wake_one()  # woken, then cancelled: pass the free child on
                raise
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)

    def _checkin(self, child: _Child) -> None:
        self._busy.discard(child)
        self._idle.append(child)
        self._wake_one()

    def _discard(self, child: _Child) -> None:
        """A child that crashed, ran out of memory or whose task was abandoned: kill it
        (and wait until it is gone); the next task gets a new one."""
        self._busy.discard(child)
        child.kill()
        self._count -= 1
        self._wake_one()

    def _discard_idle(self, child: _Child) -> None:
        child.kill()
        self._count -= 1

    def _wake_one(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return


class _Child:
    """One child process and the worker's end of its pipe."""

    def __init__(self, ctx: Any) -> None:
        parent_end, child_end = ctx.Pipe(duplex=True)
        self.process = ctx.Process(
            target=_child_main, args=(child_end,), name="qanat-thread", daemon=False
        )
        self.process.start()
        child_end.close()
        self.conn: Connection = parent_end
        self.pid: int = self.process.pid
        # the pipe and process handles are closed by whichever of kill() and a running
        # exchange() finishes last, so a pool thread never reads a closed (reused) fd
        self._lock = threading.Lock()
        self._exchanging = False
        self._killed = False

    def alive(self) -> bool:
        return bool(self.process.is_alive())

    def exchange(self, memory: int | None, task: bytes) -> bytes | None:
        """Send a task and wait for its reply (in a pool thread); None if the child died."""
        with self._lock:
            if self._killed:
                return None
            self._exchanging = True
        try:
            self.conn.send_bytes(pickle.dumps(memory))
            self.conn.send_bytes(task)
            ready = wait([self.conn, self.process.sentinel])
            if self.conn in ready:
                return self.conn.recv_bytes()
        except (EOFError, OSError):
            pass
        finally:
            with self._lock:
                self._exchanging = False
                if self._killed:
                    self._close()
        return None

    def describe_death(self, fn: Callable[..., Any]) -> str:
        self.process.join(5)
        code = self.process.exitcode
        if code is None:
            how = "stopped answering"
        elif code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            how = f"was killed by {name} (signal {-code})"
            if -code == signal.SIGSEGV:
                how += ": a segmentation fault"
            elif -code == signal.SIGKILL:
                how += ", e.g. by the OOM killer"
        else:
            how = f"exited with code {code}"
        return f"the child process (pid {self.pid}) running {_name(fn)} {how}"

    def kill(self) -> None:
        """SIGKILL the child and wait until it has exited."""
        if self._killed:
            return
        if self.process.exitcode is None:
            with contextlib.suppress(OSError):
                self.process.kill()
            self.process.join(5)
        with self._lock:
            self._killed = True
            if not self._exchanging:
                self._close()

    def _close(self) -> None:
        self.conn.close()
        with contextlib.suppress(ValueError):
            self.process.close()


def _name(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _pickled_task(
    fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any], what: str
) -> bytes:
    try:
        return pickle.dumps((fn, tuple(args), dict(kwargs)), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise TypeError(
            f"{what}: {_name(fn)} and its arguments must be picklable to cross into the child "
            f"process (a module-level function, plain data): {type(exc).__name__}: {exc}"
        ) from None


def _unpickled_reply(reply: bytes, what: str) -> tuple[str, Any, str]:
    try:
        kind, value, trace = pickle.loads(reply)
    except Exception as exc:
        raise TypeError(
            f"{what}: the child's reply could not be unpickled: {type(exc).__name__}: {exc}"
        ) from None
    return str(kind), value, str(trace or "")


# --- in the child ------------------------------------------------------------------------


def _child_main(conn: Connection) -> None:
    """A child's life: run tasks one at a time until the worker's end of the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the worker to handle
    signal.signal(signal.SIGIO, signal.SIG_DFL)  # see _die_with_worker
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    while True:
        try:
            memory = pickle.loads(conn.recv_bytes())
            task = conn.recv_bytes()
        except (EOFError, OSError):
            return
        if memory is not None and hard != resource.RLIM_INFINITY and memory > hard:
            err = ValueError(
                f"memory={format_size(memory)} is over this machine's hard limit of the "
                f"address space, {format_size(hard)}"
            )
            reply = _error_reply(err)
        else:
            if memory is not None:
                resource.setrlimit(resource.RLIMIT_AS, (memory, hard))
            _die_with_worker(conn, True)
            try:
                reply = _run_task(task)
            finally:
                _die_with_worker(conn, False)
                if memory is not None:
                    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        conn.send_bytes(reply)
        if reply is _MEMORY_REPLY:
            return  # its heap may be in any state: the pool starts a fresh child


_MEMORY_REPLY = pickle.dumps((_OUT_OF_MEMORY, None, None))


def _run_task(task: bytes) -> bytes:
    try:
        fn, args, kwargs = pickle.loads(task)
        result = fn(*args, **kwargs)
        if inspect.iscoroutine(result):
            result = asyncio.run(result)
    except MemoryError:
        return _MEMORY_REPLY
    except Exception as exc:
        return _error_reply(exc)
    try:
        return pickle.dumps((_OK, result, None), protocol=pickle.HIGHEST_PROTOCOL)
    except MemoryError:
        return _MEMORY_REPLY
    except Exception as exc:
        err = TypeError(
            f"the result of {_name(fn)} cannot be pickled back to the worker: "
            f"{type(exc).__name__}: {exc}"
        )
        return _error_reply(err)


def _error_reply(exc: Exception) -> bytes:
    trace = "".join(traceback.format_exception(exc))
    try:
        data = pickle.dumps((_ERROR, exc, trace))
        pickle.loads(data)  # an exception class that cannot be rebuilt fails here, not there
        return data
    except Exception:
        stand_in = RuntimeError(f"{type(exc).__name__}: {exc}")
        return pickle.dumps((_ERROR, stand_in, trace))


def _die_with_worker(conn: Connection, on: bool) -> None:
    """While a task runs, have the kernel kill this child if the worker dies.

    The worker sends nothing while a task runs, so the pipe becomes readable only when
    the worker's end closes: with ``O_ASYNC`` the kernel then sends SIGIO, whose default
    action ends the process, even inside C code that never returns to Python. (The
    parent of a forkserver child is the fork server, not the worker, and it outlives
    the worker while children hold its fd, so a parent-death signal would not do.)
    """
    fd = conn.fileno()
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    if on:
        fcntl.fcntl(fd, fcntl.F_SETOWN, os.getpid())
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_ASYNC)
    else:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_ASYNC)
