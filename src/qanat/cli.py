"""The ``qanat`` command: run workers, start executions, inspect and steer them.

Every command finds the queue from ``-A/--app module:attribute`` or, when that is
absent, the ``QANAT_APP`` environment variable; ``worker`` also takes it as its first
argument. Each command runs in its own ``asyncio.run`` and always stops the queue.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
import subprocess
import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import click
import pydantic

from qanat import cli_format as fmt
from qanat import codec
from qanat.errors import PayloadTooLarge, StorageError, UnknownJob, UnknownPipe
from qanat.execution import Execution
from qanat.job import Job
from qanat.pipe import EventInfo, Pipe
from qanat.queue import Queue
from qanat.storage.base import (
    COMPLETED,
    FINISHED_STATUSES,
    PAUSED,
    STATUSES,
    ExecutionRecord,
)

T = TypeVar("T")

SUPERVISOR_ENV = "QANAT_SUPERVISOR_PID"
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


def _queue(ctx: click.Context) -> Queue:
    return load_app(ctx.find_root().params.get("app"))


def _run(queue: Queue, body: Callable[[Queue], Awaitable[T]]) -> T:
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


def _echo_json(value: Any) -> None:
    click.echo(fmt.dumps(value))


async def _record(queue: Queue, execution_id: str) -> ExecutionRecord:
    rec = await queue.storage.get(execution_id)
    if rec is None:
        raise Failed(f"no execution with id {execution_id!r}")
    return rec


# --- the command group ---------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-A",
    "--app",
    metavar="MODULE:QUEUE",
    envvar="QANAT_APP",
    show_envvar=True,
    help="The queue to use: an import path such as myapp.tasks:queue.",
)
def main(app: str | None) -> None:
    """qanat: a durable job queue. Run workers, start executions, inspect and steer them."""


# --- worker --------------------------------------------------------------------------


@main.command()
@click.argument("app", required=False, metavar="[APP]")
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    help="Executions run at once per process (default: the queue's, else 100).",
)
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes to run; more than 1 spawns children and supervises them.",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="On SIGTERM/SIGINT, seconds to let running executions finish.",
)
@click.option(
    "--hot-sleep",
    type=click.FloatRange(min=0),
    help="Durable sleeps up to this long stay in memory (seconds, default 5).",
)
@click.option(
    "--log-level",
    default="warning",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
)
@click.pass_context
def worker(
    ctx: click.Context,
    app: str | None,
    concurrency: int | None,
    processes: int,
    grace: float,
    hot_sleep: float | None,
    log_level: str,
) -> None:
    """Run executions of APP's queue until SIGTERM or Ctrl-C, then drain.

    On a signal the worker stops claiming, lets running executions finish for up to
    --grace seconds and hands the rest back to storage for another worker to resume.
    """
    spec = app or ctx.find_root().params.get("app")
    queue = load_app(spec)
    assert spec is not None
    logging.basicConfig(
        level=log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if processes > 1:
        args = ["--grace", repr(grace), "--log-level", log_level]
        if concurrency is not None:
            args += ["--concurrency", str(concurrency)]
        if hot_sleep is not None:
            args += ["--hot-sleep", repr(hot_sleep)]
        ctx.exit(_supervise(spec, processes, args))
    if not queue.registry:
        raise CliError(f"{spec!r} has no jobs: there is nothing for a worker to run")
    try:
        code = asyncio.run(_work(queue, concurrency, grace, hot_sleep))
    except StorageError as exc:
        raise Failed(str(exc)) from None
    ctx.exit(code)


async def _work(
    queue: Queue, concurrency: int | None, grace: float, hot_sleep: float | None
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    sigs = (signal.SIGTERM, signal.SIGINT)
    for sig in sigs:
        loop.add_signal_handler(sig, stop.set)
    wid = "?"
    try:
        await queue.start(worker=True, concurrency=concurrency, hot_sleep=hot_sleep)
        assert queue.worker is not None
        w = queue.worker
        wid = w.id
        click.echo(
            f"qanat worker {wid} on {fmt.describe_storage(queue.storage)} running jobs: "
            f"{', '.join(sorted(queue.registry))}",
            err=True,
        )
        watch = loop.create_task(_watch_supervisor(stop))
        await stop.wait()
        watch.cancel()
        click.echo(
            f"qanat worker {wid} draining: {len(w.active)} running, grace {grace:g}s", err=True
        )
    finally:
        try:
            await queue.stop(grace)
        finally:
            for sig in sigs:
                loop.remove_signal_handler(sig)
    click.echo(f"qanat worker {wid} stopped", err=True)
    return 0


async def _watch_supervisor(stop: asyncio.Event) -> None:
    """A child of ``--processes N`` drains by itself if its supervisor disappears."""
    parent = os.environ.get(SUPERVISOR_ENV)
    if not parent:
        return
    # already reparented means the supervisor died before this loop began: drain too
    while os.getppid() == int(parent):
        await asyncio.sleep(0.5)
    click.echo(f"qanat worker: supervisor {parent} is gone", err=True)
    stop.set()


def _supervise(spec: str, n: int, args: list[str]) -> int:
    """Run ``n`` single-process workers; forward SIGTERM/SIGINT; exit when all have."""
    cmd = [sys.executable, "-m", "qanat", "worker", spec, "--processes", "1", *args]
    env = {**os.environ, SUPERVISOR_ENV: str(os.getpid())}
    children: list[subprocess.Popen[bytes]] = []
    stopping = False

    def forward(sig: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for p in children:
            if p.poll() is None:
                p.send_signal(sig)

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for _ in range(n):
            if stopping:
                break
            children.append(subprocess.Popen(cmd, env=env))
        click.echo(
            f"qanat supervisor {os.getpid()}: {len(children)} worker processes "
            f"({', '.join(str(p.pid) for p in children)})",
            err=True,
        )
        codes = [p.wait() for p in children]
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    bad = [c for c in codes if c != 0]
    return max(bad, key=abs) if bad else 0


# --- start ---------------------------------------------------------------------------


def _job(queue: Queue, name: str) -> Job[Any]:
    try:
        return queue.jobs[name]
    except UnknownJob as exc:
        raise CliError(str(exc)) from None


def _parse_input(text: str) -> dict[str, Any]:
    import json

    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"--input is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CliError(
            f"--input must be a JSON object of the job's input fields, got {type(data).__name__}"
        )
    return data


@main.command()
@click.argument("job_name", metavar="JOB")
@click.option(
    "--input",
    "input_text",
    default="{}",
    show_default=True,
    metavar="JSON",
    help="The job's input as a JSON object.",
)
@click.option("--key", help="Idempotency key: a second start with it returns the first.")
@click.option("--group", help="Group (run id) shared by related executions.")
@click.option("--priority", type=int, help="Higher starts first.")
@click.option("--delay", metavar="DURATION", help="Start no earlier than this from now (5s, 2m).")
@click.option("--wait", is_flag=True, help="Wait for the result, showing progress.")
@click.option("--timeout", type=click.FloatRange(min=0), help="With --wait: give up after this.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def start(
    ctx: click.Context,
    job_name: str,
    input_text: str,
    key: str | None,
    group: str | None,
    priority: int | None,
    delay: str | None,
    wait: bool,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Enqueue an execution of JOB and print its id (a worker runs it elsewhere)."""
    queue = _queue(ctx)
    j = _job(queue, job_name)
    data = _parse_input(input_text)
    opts: dict[str, Any] = {
        k: v
        for k, v in (("key", key), ("group", group), ("priority", priority), ("delay", delay))
        if v is not None
    }
    # Validate before anything is opened or stored.
    try:
        j.encode_input((), data)
    except PayloadTooLarge as exc:
        raise CliError(str(exc)) from None
    except (pydantic.ValidationError, TypeError) as exc:
        raise CliError(f"invalid input for job {j.name!r}: {exc}") from None
    try:
        j.new_record((), data, **opts)
    except (TypeError, ValueError) as exc:
        raise CliError(f"invalid option: {exc}") from None

    async def body(q: Queue) -> int:
        h = await q.start_execution(j, (), data, opts)
        if not wait:
            if as_json:
                _echo_json({"id": h.id, "job": h.job, "status": h.info.status if h.info else None})
            else:
                click.echo(h.id)
            return 0
        if not as_json:
            click.echo(h.id)
        return await _wait(h, timeout, as_json)

    ctx.exit(_run(queue, body))


async def _wait(h: Execution, limit: float | None, as_json: bool) -> int:
    bar = fmt.ProgressLine()
    h.on_progress(bar.update)
    try:
        rec = await h.wait(limit)
    except TimeoutError:
        bar.close()
        status = await h.status()
        raise Failed(f"execution {h.id} is still {status} after {limit:g}s") from None
    bar.close()
    if as_json:
        _echo_json(
            {
                "id": rec.id,
                "job": rec.job,
                "status": rec.status,
                "output": fmt.payload(rec.output),
                "error": fmt.error_line(rec.error) if rec.error else None,
                "reason": rec.reason,
            }
        )
    elif rec.status == COMPLETED:
        click.echo(fmt.dumps(fmt.payload(rec.output)))
    if rec.status == COMPLETED:
        return 0
    if not as_json:
        what = fmt.error_line(rec.error) if rec.error else (rec.reason or rec.status)
        click.echo(f"execution {rec.id} {rec.status}: {what}", err=True)
    return 1


# --- pipes ------------------------------------------------------------------------------


def _event_json(e: EventInfo) -> dict[str, Any]:
    return {
        "id": e.id,
        "pipe": e.pipe,
        "data": fmt.payload(codec.dumps(e.data)),  # plain JSON, not the revived type
        "sent_at": e.sent_at.isoformat(),
        "source": e.source,
        "executions": e.executions,
        "woke": e.woke,
        "failed": [{"job": f.job, "error": f.error, "at": f.at.isoformat()} for f in e.failed],
    }


@main.command()
@click.argument("pipe_name", metavar="PIPE")
@click.option(
    "--data", "data_text", default="null", show_default=True, metavar="JSON",
    help="The event's data as JSON.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def send(ctx: click.Context, pipe_name: str, data_text: str, as_json: bool) -> None:
    """Send an event on PIPE: print its id and the executions it triggered."""
    import json

    queue = _queue(ctx)
    try:
        pipe: Pipe[Any] = queue.pipes[pipe_name]
    except UnknownPipe as exc:
        raise CliError(str(exc)) from None
    try:
        data = json.loads(data_text)
    except json.JSONDecodeError as exc:
        raise CliError(f"--data is not valid JSON: {exc}") from None
    try:  # validate before anything is opened or stored
        pipe.encode(data)
    except PayloadTooLarge as exc:
        raise CliError(str(exc)) from None
    except (pydantic.ValidationError, TypeError) as exc:
        raise CliError(f"invalid data for pipe {pipe.name!r}: {exc}") from None

    e = _run(queue, lambda q: q.send_event(pipe, data))
    if as_json:
        _echo_json(_event_json(e))
        return
    click.echo(e.id)
    for eid in e.executions:
        click.echo(eid)
    for f in e.failed:
        click.echo(f"failed trigger of job {f.job}: {f.error}", err=True)


@main.command()
@click.option("--pipe", "pipe_name", help="Only events of this pipe.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="A JSON array of events.")
@click.pass_context
def events(ctx: click.Context, pipe_name: str | None, limit: int, as_json: bool) -> None:
    """List sent events, newest first, with the executions each triggered."""

    async def body(q: Queue) -> list[EventInfo]:
        return [e async for e in q.events.list(pipe=pipe_name, limit=limit)]

    found = _run(_queue(ctx), body)
    if as_json:
        _echo_json([_event_json(e) for e in found])
    elif found:
        rows = [
            [
                e.id,
                e.pipe,
                fmt.local_time(e.sent_at.timestamp()),
                ", ".join(e.executions) or "-",
                "; ".join(f"{f.job}: {f.error}" for f in e.failed) or "-",
            ]
            for e in found
        ]
        click.echo(fmt.table(["ID", "PIPE", "SENT", "EXECUTIONS", "FAILED TRIGGERS"], rows))
    else:
        click.echo("no events", err=True)


# --- inspecting ------------------------------------------------------------------------


@main.command("ls")
@click.option("--job", "jobs", multiple=True, help="Only this job (repeatable).")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(STATUSES),
    help="Only this status (repeatable).",
)
@click.option("--group", help="Only this group.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="A JSON array of executions.")
@click.pass_context
def ls(
    ctx: click.Context,
    jobs: tuple[str, ...],
    statuses: tuple[str, ...],
    group: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List executions, newest first."""
    filters: dict[str, Any] = {}
    if jobs:
        filters["job"] = list(jobs)
    if statuses:
        filters["status"] = list(statuses)
    if group is not None:
        filters["group"] = group

    async def body(q: Queue) -> list[ExecutionRecord]:
        return [
            e.info async for e in q.executions.list(limit=limit, **filters) if e.info is not None
        ]

    recs = _run(_queue(ctx), body)
    if as_json:
        _echo_json([fmt.record_json(r) for r in recs])
    elif recs:
        click.echo(fmt.ls_table(recs))
    else:
        click.echo("no executions", err=True)


@main.command()
@click.argument("execution_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def show(ctx: click.Context, execution_id: str, as_json: bool) -> None:
    """Show one execution: status, input, output or error, progress, steps and logs."""

    async def body(q: Queue) -> None:
        rec = await _record(q, execution_id)
        h = q.handle(rec)
        steps, logs = await h.steps(), await h.logs()
        if as_json:
            out = fmt.record_json(rec)
            out["steps"] = [fmt.step_json(s) for s in steps]
            out["logs"] = [fmt.log_json(ln) for ln in logs]
            _echo_json(out)
        else:
            click.echo(fmt.show_text(rec, steps, logs))

    _run(_queue(ctx), body)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def stats(ctx: click.Context, as_json: bool) -> None:
    """Counts by status and job, retries, mean and p95 run time."""
    s = _run(_queue(ctx), lambda q: q.stats())
    click.echo(fmt.dumps(s) if as_json else fmt.stats_text(s))


# --- steering -------------------------------------------------------------------------


def _control(
    action: str, act: Callable[[Execution, ExecutionRecord], Awaitable[str | None]], help_text: str
) -> click.Command:
    """A command ``qanat <action> ID``; ``act`` returns an error sentence or None."""

    @click.argument("execution_id", metavar="ID")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    @click.pass_context
    def command(ctx: click.Context, execution_id: str, as_json: bool) -> None:
        async def body(q: Queue) -> tuple[str | None, ExecutionRecord]:
            before = await _record(q, execution_id)
            problem = await act(q.handle(before), before)
            return problem, await _record(q, execution_id)

        problem, after = _run(_queue(ctx), body)
        status = after.status + (" (pause requested)" if after.pause_requested else "")
        if as_json:
            _echo_json(
                {
                    "id": after.id,
                    "action": action,
                    "ok": problem is None,
                    "status": after.status,
                    "pause_requested": after.pause_requested,
                    "error": problem,
                }
            )
        elif problem is None:
            click.echo(f"{action}: {after.id} is now {status}")
        if problem is not None:
            if not as_json:
                click.echo(f"error: {problem}", err=True)
            ctx.exit(1)

    command.__doc__ = help_text
    return main.command(action)(command)


async def _cancel(h: Execution, rec: ExecutionRecord) -> str | None:
    if await h.cancel("cancelled from the CLI"):
        return None
    return f"execution {h.id} is {rec.status}; only live executions can be cancelled"


async def _pause(h: Execution, rec: ExecutionRecord) -> str | None:
    if rec.status in FINISHED_STATUSES:
        return f"execution {h.id} is {rec.status}; only live executions can be paused"
    await h.pause()
    return None


async def _resume(h: Execution, rec: ExecutionRecord) -> str | None:
    if rec.status != PAUSED and not rec.pause_requested:
        return f"execution {h.id} is {rec.status}, not paused"
    await h.resume()
    return None


async def _retry(h: Execution, rec: ExecutionRecord) -> str | None:
    if await h.retry():
        return None
    return f"execution {h.id} is {rec.status}; only failed or cancelled executions can be retried"


_control("cancel", _cancel, "Cancel an execution (and its live children).")
_control("pause", _pause, "Pause an execution at its next step boundary.")
_control("resume", _resume, "Resume a paused execution.")
_control("retry", _retry, "Run a failed or cancelled execution again from the start.")

__all__ = ["load_app", "main"]
