"""Functions the thread-step tests run in child processes (importable there by name).

A ``thread`` step pickles its function by reference, so the child imports this module;
it is kept small so that import is cheap.
"""

from __future__ import annotations

import ctypes
import os
import time
from pathlib import Path


def add(a: int, b: int) -> int:
    return a + b


def pid() -> int:
    return os.getpid()


def segfault() -> None:
    ctypes.string_at(0)  # reads address 0: SIGSEGV


def exit_3() -> None:
    os._exit(3)


def hog_memory() -> int:
    return len(bytearray(1024**3))  # 1 GB, over a 200 MB limit


def fail(message: str) -> None:
    raise ValueError(message)


def write_pid_and_sleep(path: str, seconds: float) -> int:
    """Record this child's pid (atomically, so a reader never sees half of it), then sleep."""
    tmp = f"{path}.tmp"
    Path(tmp).write_text(str(os.getpid()))
    os.replace(tmp, path)
    time.sleep(seconds)
    return os.getpid()


def crash_once(marker: str) -> int:
    """Die with exit code 1 the first time (leaving ``marker``), return the pid after."""
    if not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        os._exit(1)
    return os.getpid()


def append_pid(path: str) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
    finally:
        os.close(fd)
    return os.getpid()


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a zombie counts as gone: it runs nothing)."""
    if not os.path.isdir("/proc/self"):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def read_text(path: str | Path) -> str:
    """The file's text, or "" if it does not exist (for the tests, in the worker process)."""
    p = Path(path)
    return p.read_text() if p.exists() else ""


async def add_async(a: int, b: int) -> int:
    return a + b


def unpicklable_result() -> object:
    import threading

    return threading.Lock()
