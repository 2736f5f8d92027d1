"""The ``qanat`` command: run workers, start executions, inspect and steer them.

Every command finds the queue from ``-A/--app module:attribute`` or, when that is
absent, the ``QANAT_APP`` environment variable; ``worker`` also takes it as its first
argument. Each command runs in its own ``asyncio.run`` and always stops the queue.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import sys
from typing import Any

import click
import pydantic

from qanat import cli_control, codec
from qanat import cli_format as fmt
from qanat.cli_app import CliError, Failed, load_app
from qanat.cli_app import echo_json as _echo_json
from qanat.cli_app import get_record as _record
from qanat.cli_app import job_of as _job
from qanat.cli_app import queue_of as _queue
from qanat.cli_app import run as _run
from qanat.cli_control import filter_options, filters_of
from qanat.engine.supervisor import Supervisor, spawn_passing, watch_supervisor
from qanat.errors import ConfigurationError, PayloadTooLarge, StorageError, UnknownPipe
from qanat.execution import Execution
from qanat.pipe import Pipe
from qanat.queue import Queue
from qanat.server.auth import TOKEN_ENV, resolve_token
from qanat.storage.base import (
    COMPLETED,
    ExecutionRecord,
)
from qanat.views import EventInfo

# --- the command group ---------------------------------------------------------------

_log_level = click.option(
    "--log-level",
    default="warning",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
)


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
    help="Worker processes to run; more than 1 runs them under a supervisor that restarts "
    "a dead one (SIGTTIN / SIGTTOU add / remove one).",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="On SIGTERM/SIGINT, seconds a step in flight may take to finish before it is "
    "interrupted (each execution is handed back at its next step boundary).",
)
@click.option(
    "--hot-sleep",
    type=click.FloatRange(min=0),
    help="Durable sleeps up to this long stay in memory (seconds, default 5).",
)
@_log_level
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    help="Serve Prometheus metrics at http://HOST:PORT/metrics (one port for all --processes).",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="Address of --metrics-port; other than loopback only with a token.",
)
@click.option(
    "--metrics-token",
    metavar="TOKEN",
    help="Bearer token /metrics requires (default: $QANAT_TOKEN).",
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
    metrics_port: int | None,
    metrics_host: str,
    metrics_token: str | None,
) -> None:
    """Run executions of APP's queue until SIGTERM or Ctrl-C, then drain.

    On a signal the worker stops claiming; each running execution finishes the step in
    flight and is handed back to storage at that step boundary (sleeping and waiting ones
    at once), due for any worker to resume. A step still running after --grace seconds
    is interrupted and runs again elsewhere.
    With --processes N > 1 a supervisor keeps N worker processes running (a dead one
    is replaced); SIGTTIN adds a process, SIGTTOU removes one.
    With --metrics-port, GET /metrics serves Prometheus text (docs/observability.md).
    """
    spec = app or ctx.find_root().params.get("app")
    queue = load_app(spec)
    assert spec is not None
    logging.basicConfig(
        level=log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not queue.registry:
        raise CliError(f"{spec!r} has no jobs: there is nothing for a worker to run")
    token = resolve_token(metrics_token)
    metrics = None if metrics_port is None else (metrics_host, metrics_port, token)
    if processes > 1:
        args = ["--grace", repr(grace), "--log-level", log_level]
        if concurrency is not None:
            args += ["--concurrency", str(concurrency)]
        if hot_sleep is not None:
            args += ["--hot-sleep", repr(hot_sleep)]
        child = [sys.executable, "-m", "qanat", "worker", spec, "--processes", "1", *args]
        ctx.exit(_supervise(child, processes, metrics))
    try:
        code = asyncio.run(_work(queue, concurrency, grace, hot_sleep, metrics))
    except StorageError as exc:
        raise Failed(str(exc)) from None
    except ConfigurationError as exc:
        raise CliError(str(exc)) from None
    ctx.exit(code)


#: Where ``--metrics-port`` serves: (host, port, token).
MetricsAt = tuple[str, int, str | None]


def _supervise(child: list[str], processes: int, metrics: MetricsAt | None) -> int:
    """Run the children under a supervisor; with metrics, they share one listening socket
    and one snapshot directory that the supervisor owns."""
    echo = functools.partial(click.echo, err=True)
    if metrics is None:
        return Supervisor(child, processes, echo=echo).run()
    from qanat.server.metrics_port import SupervisedMetrics

    host, port, token = metrics
    try:
        shared = SupervisedMetrics(host, port, token)
    except ConfigurationError as exc:
        raise CliError(str(exc)) from None
    with shared:
        env = {**os.environ, **shared.env}
        if token is not None:  # to the children by environment, not on their command line
            env[TOKEN_ENV] = token
        child += ["--metrics-port", str(shared.port), "--metrics-host", host]
        sup = Supervisor(child, processes, env=env, spawn=spawn_passing(shared.fds), echo=echo)
        return sup.run()


async def _work(
    queue: Queue,
    concurrency: int | None,
    grace: float,
    hot_sleep: float | None,
    metrics: MetricsAt | None = None,
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    sigs = (signal.SIGTERM, signal.SIGINT)
    for sig in sigs:
        loop.add_signal_handler(sig, stop.set)
    wid = "?"
    served = None
    try:
        if metrics is not None:  # metrics on before the first execution runs
            from qanat.server.metrics_port import serve_worker_metrics

            served = await serve_worker_metrics(queue, *metrics)
        await queue.start(worker=True, concurrency=concurrency, hot_sleep=hot_sleep)
        assert queue.worker is not None
        w = queue.worker
        wid = w.id
        click.echo(
            f"qanat worker {wid} on {fmt.describe_storage(queue.storage)} running jobs: "
            f"{', '.join(sorted(queue.registry))}",
            err=True,
        )
        if served is not None and metrics is not None:
            where = f"http://{metrics[0]}:{served.port}/metrics"
            click.echo(f"qanat worker {wid}: metrics at {where}", err=True)
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
            if served is not None:
                await served.stop()
            for sig in sigs:
                loop.remove_signal_handler(sig)
    click.echo(f"qanat worker {wid} stopped", err=True)
    return 0


async def _watch_supervisor(stop: asyncio.Event) -> None:
    """A child of ``--processes N`` drains by itself if its supervisor disappears."""
    await watch_supervisor(stop.set)


# --- start ---------------------------------------------------------------------------


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
@filter_options
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="A JSON array of executions.")
@click.pass_context
def ls(ctx: click.Context, /, limit: int, as_json: bool, **options: Any) -> None:
    """List executions, newest first."""
    filters = filters_of(options)

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


@main.command()
@click.argument("app", required=False, metavar="[APP]")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=4000, show_default=True)
@click.option(
    "--token",
    envvar="QANAT_TOKEN",
    show_envvar=True,
    help="Bearer token every request must carry (required off loopback).",
)
@click.option("--ssl-certfile", type=click.Path(exists=True, dir_okay=False), help="TLS cert.")
@click.option("--ssl-keyfile", type=click.Path(exists=True, dir_okay=False), help="TLS key.")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
)
@click.pass_context
def serve(ctx: click.Context, /, app: str | None, **options: Any) -> None:
    """Run the orchestration node: workers and clients reach storage through it."""
    from qanat.server.serve import serve as run_node

    queue = load_app(app or ctx.find_root().params.get("app"))
    try:
        run_node(queue, echo=lambda line: click.echo(line, err=True), **options)
    except ConfigurationError as exc:
        raise CliError(str(exc)) from None


@main.command()
@click.argument("app", required=False, metavar="[APP]")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=4000, show_default=True)
@click.option(
    "--token",
    envvar="QANAT_TOKEN",
    show_envvar=True,
    help="Require this token (sign-in form, ?token= or Authorization: Bearer); "
    "needed to bind anything but loopback.",
)
@_log_level
@click.pass_context
def dashboard(
    ctx: click.Context, app: str | None, host: str, port: int, token: str | None, log_level: str
) -> None:
    """Serve the web dashboard of APP's queue (SPEC §11) until Ctrl-C; runs no worker."""
    from qanat.dashboard.serve import serve

    try:
        serve(
            load_app(app or ctx.find_root().params.get("app")),
            host=host,
            port=port,
            token=token,
            log_level=log_level.lower(),
        )
    except ConfigurationError as exc:
        raise CliError(str(exc)) from None


for _command in cli_control.COMMANDS:
    main.add_command(_command)

__all__ = ["load_app", "main"]
