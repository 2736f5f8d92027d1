"""The ``qanat`` commands that steer executions and jobs: ``cancel|pause|resume|retry``
(one execution by id, or every match of the ``ls`` filters) and ``jobs`` (list, pause,
resume). What may be done to which execution is decided in ``qanat.execution``; these
commands only call it and print."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from qanat import cli_format as fmt
from qanat.cli_app import CliError, echo_json, get_record, job_of, queue_of, run
from qanat.durations import parse_duration
from qanat.queue import Queue
from qanat.storage.base import STATUSES, ExecutionRecord

#: The execution filters of ``ls`` and the bulk control commands: (option, filter name).
_TIME_FILTERS = (
    ("--started-before", "started_before"),
    ("--started-after", "started_after"),
    ("--completed-before", "completed_before"),
    ("--completed-after", "completed_after"),
)
_WHEN = "WHEN: an ISO time with its zone (2026-01-02T03:04:05+00:00) or a duration ago (2h)."


def filter_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The ``--job/--status/--group`` and time filter options of a command."""
    for flag, name in reversed(_TIME_FILTERS):
        fn = click.option(
            flag,
            name,
            metavar="WHEN",
            help=f"Only those {flag[2:].replace('-', ' ')} WHEN."
            + (f" {_WHEN}" if flag == _TIME_FILTERS[-1][0] else ""),
        )(fn)
    fn = click.option("--group", help="Only this group.")(fn)
    fn = click.option(
        "--status",
        "statuses",
        multiple=True,
        type=click.Choice(STATUSES),
        help="Only this status (repeatable).",
    )(fn)
    return click.option("--job", "jobs", multiple=True, help="Only this job (repeatable).")(fn)


def filters_of(options: dict[str, Any]) -> dict[str, Any]:
    """``queue.executions`` filters from the options of ``filter_options``."""
    filters: dict[str, Any] = {}
    if options.get("jobs"):
        filters["job"] = list(options["jobs"])
    if options.get("statuses"):
        filters["status"] = list(options["statuses"])
    if options.get("group") is not None:
        filters["group"] = options["group"]
    for flag, name in _TIME_FILTERS:
        if options.get(name) is not None:
            filters[name] = _when(options[name], flag)
    return filters


def _when(text: str, flag: str) -> datetime:
    """A time option: an ISO time with its timezone, or a duration before now."""
    try:
        return datetime.now(UTC) - timedelta(seconds=parse_duration(text, what=flag))
    except (ValueError, TypeError):
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(
            f"{flag} {text!r} is neither an ISO time (2026-01-02T03:04:05+00:00) "
            "nor a duration (2h)"
        ) from None
    if when.tzinfo is None:
        raise CliError(f"{flag} {text!r} has no timezone: add one, e.g. {text}+00:00")
    return when


# --- steering -------------------------------------------------------------------------

#: What each control command prints after a count of changed executions.
_DONE = {"cancel": "cancelled", "pause": "paused", "resume": "resumed", "retry": "retried"}


#: The commands of this module, for ``qanat.cli`` to add to its group.
COMMANDS: list[click.Command] = []


def _control(action: str, help_text: str) -> click.Command:
    """``qanat <action> ID`` or ``qanat <action> --job/--status/--group/...``: the rules of
    what may be done to which execution live in ``qanat.execution``; this only prints."""

    @click.argument("execution_id", metavar="[ID]", required=False)
    @filter_options
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    @click.pass_context
    def command(
        ctx: click.Context, /, execution_id: str | None, as_json: bool, **options: Any
    ) -> None:
        filters = filters_of(options)
        if (execution_id is None) == (not filters):
            raise CliError(
                f"{action}: give an execution ID or filters (--job, --status, --group, "
                f"--started-before, ...){', not both' if filters else ''}"
            )
        if execution_id is not None:
            _control_one(ctx, action, execution_id, as_json)
            return
        reason = "cancelled from the CLI" if action == "cancel" else None

        async def body(q: Queue) -> int:
            method = getattr(q.executions, action)
            n: int = await method(reason=reason, **filters) if reason else await method(**filters)
            return n

        n = run(queue_of(ctx), body)
        if as_json:
            echo_json({"action": action, "filters": filters, "changed": n})
        else:
            click.echo(f"{action}: {n} execution{'' if n == 1 else 's'} {_DONE[action]}")

    command.__doc__ = help_text
    made = click.command(action)(command)
    COMMANDS.append(made)
    return made


def _control_one(ctx: click.Context, action: str, execution_id: str, as_json: bool) -> None:
    reason = "cancelled from the CLI" if action == "cancel" else None

    async def body(q: Queue) -> tuple[str | None, ExecutionRecord]:
        before = await get_record(q, execution_id)
        done = await q.handle(before).control(action, reason)
        return done.refused, await get_record(q, execution_id)

    problem, after = run(queue_of(ctx), body)
    status = after.status + (" (pause requested)" if after.pause_requested else "")
    if as_json:
        echo_json(
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


_control("cancel", "Cancel an execution (and its live children), or every matching live one.")
_control("pause", "Pause an execution at its next step boundary, or every matching live one.")
_control("resume", "Resume a paused execution, or every matching paused one.")
_control(
    "retry", "Run a failed or cancelled execution again from the start, or every matching one."
)


# --- jobs -----------------------------------------------------------------------------


@click.group("jobs", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="A JSON array of jobs.")
@click.pass_context
def jobs_group(ctx: click.Context, as_json: bool) -> None:
    """List the app's jobs and whether each is paused; `jobs pause|resume NAME` steer them."""
    if ctx.invoked_subcommand is not None:
        return
    queue = queue_of(ctx)
    paused = run(queue, lambda q: q.paused_jobs())
    names = sorted(set(queue.registry) | paused)
    if as_json:
        echo_json([{"job": n, "paused": n in paused, "known": n in queue.registry} for n in names])
        return
    rows = [
        [n, "paused" if n in paused else "active", "" if n in queue.registry else "not in this app"]
        for n in names
    ]
    click.echo(fmt.table(["JOB", "STATE", ""], rows))


def _job_control(paused: bool) -> click.Command:
    action = "pause" if paused else "resume"

    @click.argument("names", metavar="JOB...", nargs=-1, required=True)
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    @click.pass_context
    def command(ctx: click.Context, names: tuple[str, ...], as_json: bool) -> None:
        queue = queue_of(ctx)
        targets = [job_of(queue, n) for n in names]  # an unknown name is refused first

        async def body(q: Queue) -> list[bool]:
            return [await (j.pause() if paused else j.resume()) for j in targets]

        changed = run(queue, body)
        if as_json:
            echo_json(
                [
                    {"job": n, "paused": paused, "changed": c}
                    for n, c in zip(names, changed, strict=True)
                ]
            )
            return
        state = "paused" if paused else "active"
        for n, c in zip(names, changed, strict=True):
            click.echo(f"{action}: job {n!r} is {'now' if c else 'already'} {state}")

    command.__doc__ = (
        "Stop starting new executions of these jobs, on every worker (running ones carry on)."
        if paused
        else "Start executions of these paused jobs again."
    )
    made: click.Command = jobs_group.command(action)(command)
    return made


_job_control(True)
_job_control(False)
COMMANDS.append(jobs_group)
