"""What every ``qanat`` command shares: finding the app's queue, running a body against
it, the errors that set the exit status, and small lookups."""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import click

from qanat import cli_format as fmt
from qanat.errors import StorageError, UnknownJob
from qanat.job import Job
from qanat.queue import Queue
from qanat.storage.base import ExecutionRecord

T = TypeVar("T")

NO_APP = "no app given: pass -A module:queue or set QANAT_APP"


class CliError(click.ClickException):
    """A one-line usage error (exit status 2): bad app, job name or input."""

    exit_code = 2


class Failed(click.ClickException):
    """The command ran but what it asked for did not happen (exit status 1)."""

    exit_code = 1


# --- finding the queue ---------------------------------------------------------------


def load_app(spec: str | None) -> Queue:
    """Import ``module:attribute`` (attributes may be dotted) and check it is a Queue."""
    if not spec:
        raise CliError(NO_APP)
    module_name, colon, attr = spec.partition(":")
    if not colon or not module_name or not attr:
        raise CliError(f"invalid app {spec!r}: expected module:attribute, e.g. myapp.tasks:queue")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise CliError(
                f"cannot import app module {module_name!r}: no module named {exc.name!r} "
                f"(searched the current directory {cwd} and sys.path)"
            ) from None
        _import_failed(module_name, exc)
    except Exception as exc:  # the app's own import-time error
        _import_failed(module_name, exc)
    obj: Any = module
    for i, part in enumerate(attr.split(".")):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            detail = ""
            if i > 0:
                detail = f" ({module_name}:{'.'.join(attr.split('.')[:i])} has no {part!r})"
            raise CliError(
                f"app module {module_name!r} has no attribute {attr!r}{detail}"
            ) from None
    if not isinstance(obj, Queue):
        raise CliError(
            f"{spec!r} is a {type(obj).__module__}.{type(obj).__qualname__}, not a qanat.Queue"
        )
    return obj


def _import_failed(module_name: str, exc: BaseException) -> NoReturn:
    traceback.print_exception(exc, file=sys.stderr)
    raise CliError(f"importing app module {module_name!r} failed: {type(exc).__name__}: {exc}")


def queue_of(ctx: click.Context) -> Queue:
    """The queue named by ``-A/--app`` (or ``QANAT_APP``) of this command line."""
    return load_app(ctx.find_root().params.get("app"))


def run(queue: Queue, body: Callable[[Queue], Awaitable[T]]) -> T:
    """Open the queue as a client, run ``body``, always stop the queue."""

    async def go() -> T:
        try:
            await queue.start(worker=False)
            return await body(queue)
        finally:
            await queue.stop()

    try:
        return asyncio.run(go())
    except StorageError as exc:
        raise Failed(str(exc)) from None


def echo_json(value: Any) -> None:
    """Print ``value`` as one line of JSON."""
    click.echo(fmt.dumps(value))


async def get_record(queue: Queue, execution_id: str) -> ExecutionRecord:
    """The stored execution, or ``Failed`` (exit status 1) naming the missing id."""
    rec = await queue.storage.get(execution_id)
    if rec is None:
        raise Failed(f"no execution with id {execution_id!r}")
    return rec


def job_of(queue: Queue, name: str) -> Job[Any]:
    """The job named ``name`` on ``queue``, or ``CliError`` listing the known ones."""
    try:
        return queue.jobs[name]
    except UnknownJob as exc:
        raise CliError(str(exc)) from None
