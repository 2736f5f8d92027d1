"""Flow-control benchmarks: the cost of ``concurrency=`` on SQLite (synchronous=FULL).

    python benchmarks/flow.py [--only drain|blocked ...] [--runs N] [--quick]

drain
    ``n`` (5,000) trivial executions pre-enqueued, then one ``qanat worker`` process
    drains them, for four jobs: ``free`` (no option) against ``capped``
    (``concurrency=50``, one gate for the whole job), and ``free_keyed`` (no option)
    against ``keyed`` (``Concurrency(10, key=user)`` over 20 users). Reports
    executions/s (with and without the worker's start-up), the ratio limited/unlimited,
    worker CPU per execution, and the most executions ever running at once (from the
    ``started_at``/``completed_at`` intervals: checks the limit held). Target: the limit
    costs at most 30 % of throughput (ratio >= 0.70).

blocked
    ``Concurrency(1, key=user)``; one execution for user ``hot`` runs and holds the slot
    (its handler waits for a file), then 10,000 more for ``hot`` are enqueued in one
    ``start_many``; the worker's next claim parks them all. Then ``n`` (200) executions
    for other users are started one at a time and the time from just before
    ``start()`` to the first line of their handler (a ``time.time()`` it returns) is
    taken, and the same for a job without flow control. The same figures are taken
    first with no backlog (baseline). Target: other keys start within 10 ms. The worker
    loads this module with ``QANAT_FLOW_CLAIM_LOG`` set, which wraps the SQLite claim
    operation to log its time on the writer thread (inside the transaction, fsync not
    included) and the rows it changed: the claim that parks the backlog is the one-off
    cost reported.

Every run is a fresh Python process on a fresh database in its own temporary folder,
after waiting (up to 10 s) for the machine to be quiet, as ``run.py`` does; the drain
variants are interleaved run by run so that drift hits them alike. Figures are medians
over ``--runs`` (3); the limited/unlimited ratio is also given per run (paired).
Output: a summary on stdout and ``benchmarks/out/flow-<time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from qanat import Concurrency, Queue, job

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
WORKLOADS = ("drain", "blocked")
DRAIN_N, DRAIN_N_QUICK = 5000, 1000
BACKLOG, BACKLOG_QUICK = 10_000, 1000
SAMPLES, SAMPLES_QUICK = 200, 30
WARMUP = 20
USERS = 20
CHUNK = 1000
POLL = 0.02
TARGET_RATIO = 0.70
TARGET_START_MS = 10.0

# --- the jobs (``qanat worker flow:queue`` loads this module) ---------------------------


@job
async def free() -> None:
    """No flow control."""


@job(concurrency=50)
async def capped() -> None:
    """At most 50 running at once (one gate for the job)."""


@job
async def free_keyed(user: str) -> None:
    """Same input as ``keyed``, no flow control."""


@job(concurrency=Concurrency(10, key=lambda i: i["user"]))
async def keyed(user: str) -> None:
    """At most 10 running at once per user (20 users x 10 = 200: above the worker's 100
    slots, so the limit is checked on every claim but never binds)."""


@job(concurrency=Concurrency(3, key=lambda i: i["user"]))
async def keyed3(user: str) -> None:
    """At most 3 running at once per user (20 users x 3 = 60 < 100: the limit binds)."""


def _released() -> bool:
    hold = os.environ.get("QANAT_FLOW_HOLD")
    return hold is None or os.path.exists(hold)


@job(concurrency=Concurrency(1, key=lambda i: i["user"]))
async def gated(user: str) -> float:
    """One running per user; ``hot`` ones wait for the hold file. Returns when it began."""
    began = time.time()
    while user == "hot" and not _released():
        await asyncio.sleep(0.02)
    return began


@job
async def stamp() -> float:
    """No flow control; returns when it began."""
    return time.time()


JOBS = [free, capped, free_keyed, keyed, keyed3, gated, stamp]
#: (unlimited, limited) pairs of the drain
DRAIN_PAIRS = [("free", "capped"), ("free_keyed", "keyed"), ("free_keyed", "keyed3")]
DRAIN_JOBS = ["free", "capped", "free_keyed", "keyed", "keyed3"]


def make_queue(path: str | os.PathLike[str]) -> Queue:
    return Queue(jobs=JOBS, storage=f"sqlite:///{os.fspath(path)}")


def _log_claims(path: str) -> None:
    """Wrap the SQLite claim operation: one line per claim, ``wall_time op_seconds
    taken rows_changed``, written on the writer thread after the operation."""
    import qanat.storage.sqlcore.claims as sq

    inner = sq.op_claim
    out = open(path, "a", buffering=1)  # kept open for the life of the worker

    def timed(conn: sqlite3.Connection, *args: Any) -> Any:
        changes = conn.total_changes
        t = time.perf_counter()
        result = inner(conn, *args)
        took = time.perf_counter() - t
        out.write(f"{time.time():.6f} {took:.6f} {len(result[0])} {conn.total_changes - changes}\n")
        return result

    sq.op_claim = timed


if os.environ.get("QANAT_FLOW_CLAIM_LOG"):
    _log_claims(os.environ["QANAT_FLOW_CLAIM_LOG"])

queue = make_queue(os.environ.get("QANAT_BENCH_DB", "flow.db"))


# --- helpers -----------------------------------------------------------------------------

#: Executions not finished yet: claimable ones (on the claim index) plus parked ones
#: (out of it, on the parking index). Both are index counts, cheap beside the worker.
LEFT = (
    "SELECT (SELECT count(*) FROM executions WHERE available_at IS NOT NULL "
    "AND status IN ('pending', 'running', 'waiting')) + (SELECT count(*) FROM executions "
    "WHERE gate IS NOT NULL AND available_at IS NULL)"
)
PARKED = "SELECT count(*) FROM executions WHERE gate IS NOT NULL AND available_at IS NULL"


def _bench_helpers() -> Any:
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    import run

    return run


def _spawn_worker(db: Path, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "qanat", "worker", "flow:queue"],
        cwd=HERE,
        env={**os.environ, "QANAT_BENCH_DB": str(db), **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


#: Running executions per window gate (a snapshot, on the slot index): checks the limit.
RUNNING_PER_GATE = (
    "SELECT coalesce(max(c), 0) FROM (SELECT count(*) AS c FROM executions "
    "INDEXED BY executions_slots WHERE status = 'running' AND slot IS NOT NULL GROUP BY slot)"
)


def _claim_log(path: Path, skip: int = 0) -> list[tuple[float, ...]]:
    """The lines of a claim log: (wall time, op seconds, taken, rows changed)."""
    if not path.exists():
        return []
    with path.open() as f:
        return [tuple(float(x) for x in line.split()) for line in f][skip:]


async def _wait_for(watch: sqlite3.Connection, sql: str, args: tuple[Any, ...], want: Any) -> None:
    deadline = time.perf_counter() + 120
    while watch.execute(sql, args).fetchone()[0] != want:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"timed out waiting for {sql} == {want}")
        await asyncio.sleep(0.002)


# --- the workloads (each run in a child process: ``flow.py --child NAME``) --------------


async def w_drain(tmp: Path, n: int, name: str) -> dict[str, float]:
    """Pre-enqueue ``n`` executions of job ``name``, then a worker process drains them."""
    db, log = tmp / "q.db", tmp / "claims.log"
    q = make_queue(db)
    await q.start(worker=False)
    try:
        j = q.jobs[name]
        takes_user = "user" in inspect.signature(j.handler).parameters
        for i in range(0, n, CHUNK):
            size = min(CHUNK, n - i)
            inputs = [{"user": f"u{(i + k) % USERS}"} if takes_user else {} for k in range(size)]
            await j.start_many(inputs)
    finally:
        await q.stop()
    watch = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
    spawned = time.time()
    proc = _spawn_worker(db, QANAT_FLOW_CLAIM_LOG=str(log))
    peak = 0
    try:
        while watch.execute(LEFT).fetchone()[0] > 0:
            if proc.poll() is not None:
                raise RuntimeError("the worker exited before the drain finished")
            peak = max(peak, watch.execute(RUNNING_PER_GATE).fetchone()[0])
            await asyncio.sleep(POLL)
        cpu = _cpu_s(proc.pid)
    finally:
        _bench_helpers()._stop_worker(proc)
    first, last, done = watch.execute(
        "SELECT min(started_at), max(completed_at), count(*) FROM executions "
        "WHERE status = 'completed'"
    ).fetchone()
    watch.close()
    assert done == n, f"{done} of {n} completed"
    claims = [c for c in _claim_log(log) if c[2] or c[3]]  # leave out empty polls
    return {
        "n": n,
        "with_startup_per_s": n / (last - spawned),
        "steady_per_s": n / (last - first),
        "startup_s": first - spawned,
        "cpu_us_per_exec": cpu / n * 1e6,
        "claims": len(claims),
        "claim_op_us_per_exec": sum(c[1] for c in claims) / n * 1e6,
        "claim_rows_changed_per_exec": sum(c[3] for c in claims) / n,
        "max_running_per_gate_seen": peak,
    }


Sample = tuple[float, str, float, float, float]  # ms, id, before start(), after, handler


async def _starts(q: Queue, name: str, n: int, prefix: str) -> list[Sample]:
    """Start ``n`` executions one at a time; ms from before ``start()`` to the handler."""
    j = q.jobs[name]
    out = []
    for i in range(n):
        t = time.time()
        h = await (j.start(user=f"{prefix}{i}") if name == "gated" else j.start())
        enqueued = time.time()
        began = await h.result(timeout=60)
        out.append(((began - t) * 1000, h.id, t, enqueued, began))
    return out


def _summary(ms: list[float], prefix: str) -> dict[str, float]:
    ms = sorted(ms)
    pct = _bench_helpers()._pct
    return {
        f"{prefix}_p50_ms": statistics.median(ms),
        f"{prefix}_p95_ms": pct(ms, 0.95),
        f"{prefix}_max_ms": ms[-1],
    }


def _latency(samples: list[Sample], watch: sqlite3.Connection, prefix: str) -> dict[str, float]:
    """p50/p95/max, and where the slowest sample spent its time: ``start()`` returning,
    then waiting for the claim (``started_at``), then claim to handler."""
    out = _summary([s[0] for s in samples], prefix)
    _, ident, t, enqueued, began = max(samples)
    (claimed,) = watch.execute(
        "SELECT started_at FROM executions WHERE id = ?", (ident,)
    ).fetchone()
    out[f"{prefix}_worst_enqueue_ms"] = (enqueued - t) * 1000
    out[f"{prefix}_worst_to_claim_ms"] = (claimed - enqueued) * 1000
    out[f"{prefix}_worst_claim_to_handler_ms"] = (began - claimed) * 1000
    return out


async def w_blocked(tmp: Path, n: int, backlog: int) -> dict[str, float]:
    """Start latency of other keys (and another job) behind a parked backlog."""
    db, hold, log = tmp / "q.db", tmp / "release", tmp / "claims.log"
    q = make_queue(db)
    await q.start(worker=False)
    proc = _spawn_worker(db, QANAT_FLOW_HOLD=str(hold), QANAT_FLOW_CLAIM_LOG=str(log))
    watch = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
    out: dict[str, float] = {"n": n, "backlog": backlog}
    try:
        await _starts(q, "gated", WARMUP, "w")  # also waits for the worker to be up
        await _starts(q, "stamp", WARMUP, "")
        out |= _latency(await _starts(q, "gated", n, "a"), watch, "base_keyed")
        out |= _latency(await _starts(q, "stamp", n, ""), watch, "base_other_job")

        hot = await q.jobs.gated.start(user="hot")
        status = "SELECT status FROM executions WHERE id = ?"
        await _wait_for(watch, status, (hot.id,), "running")
        mark = len(_claim_log(log))
        t = time.perf_counter()
        await q.jobs.gated.start_many([{"user": "hot"}] * backlog)
        enqueued = time.perf_counter()
        # Other keys started one at a time while the worker parks the backlog (they
        # queue behind it on the claim index until it is parked).
        during: list[float] = []
        while not during or watch.execute(PARKED).fetchone()[0] < backlog:
            during += [s[0] for s in await _starts(q, "gated", 1, f"c{len(during)}-")]
        await _wait_for(watch, PARKED, (), backlog)
        out["backlog_enqueue_s"] = enqueued - t
        out["backlog_parked_after_s"] = time.perf_counter() - enqueued
        out["during_parking_starts"] = len(during)
        out["during_parking_first_ms"] = during[0]
        out["during_parking_max_ms"] = max(during)
        claims = _claim_log(log, mark)
        parking = [c for c in claims if c[3] > c[2]]  # rows changed beyond those taken
        # rows changed: a bulk park counts each row once, a row re-parked by id again
        assert sum(c[3] - c[2] for c in parking) >= backlog, parking
        out["parking_claims"] = len(parking)
        out["parking_claim_max_ms"] = max(c[1] for c in parking) * 1000
        out["parking_claims_total_ms"] = sum(c[1] for c in parking) * 1000
        out["parking_us_per_row"] = out["parking_claims_total_ms"] * 1000 / backlog

        out |= _latency(await _starts(q, "gated", n, "b"), watch, "keyed")
        out |= _latency(await _starts(q, "stamp", n, ""), watch, "other_job")
        later = [c[1] * 1000 for c in _claim_log(log, mark + len(claims))]
        out |= _summary(later, "claim_op_behind_backlog")
        assert watch.execute(PARKED).fetchone()[0] == backlog
        assert watch.execute(status, (hot.id,)).fetchone()[0] == "running"
    finally:
        hold.touch()
        watch.close()
        _bench_helpers()._stop_worker(proc)
        await q.stop()
    return out


def child(name: str, tmp: Path, n: int, extra: str) -> dict[str, float]:
    if name == "drain":
        return asyncio.run(w_drain(tmp, n, extra))
    return asyncio.run(w_blocked(tmp, n, int(extra)))


# --- the suite ----------------------------------------------------------------------------


def run_child(name: str, n: int, extra: str, quiet: float) -> dict[str, float]:
    helpers = _bench_helpers()
    helpers.wait_quiet(quiet)
    busy, own = helpers._busy_s(), helpers._children_cpu_s()
    with tempfile.TemporaryDirectory(prefix=f"qanat-flow-{name}-") as tmp:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", name, "--n", str(n),
             "--extra", extra, "--dir", tmp],
            capture_output=True,
            text=True,
            timeout=600,
        )  # fmt: skip
    foreign = (helpers._busy_s() - busy) - (helpers._children_cpu_s() - own)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark {name} {extra} failed:\n{proc.stderr[-4000:]}")
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["other_cpu_s"] = max(0.0, foreign)
    return result


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def _show(label: str, d: dict[str, float]) -> None:
    shown = ", ".join(f"{k}={v:,.2f}" for k, v in d.items() if k != "n")
    print(f"{label:12} {shown}", flush=True)


def suite_drain(n: int, runs: int, quiet: float) -> dict[str, Any]:
    each: dict[str, list[dict[str, float]]] = {name: [] for name in DRAIN_JOBS}
    for r in range(runs):
        for name in DRAIN_JOBS:
            each[name].append(run_child("drain", n, name, quiet))
            _show(f"{name}#{r + 1}", each[name][-1])
    out: dict[str, Any] = {"all_runs": each}
    for name, runs_ in each.items():
        out[name] = _median(runs_)
    for base, limited in DRAIN_PAIRS:
        for metric in ("with_startup_per_s", "steady_per_s"):
            paired = [
                lim[metric] / b[metric] for b, lim in zip(each[base], each[limited], strict=True)
            ]
            out[f"{limited}_ratio_{metric}"] = {
                "of_medians": out[limited][metric] / out[base][metric],
                "paired_median": statistics.median(paired),
                "paired": paired,
            }
    return out


def suite_blocked(n: int, backlog: int, runs: int, quiet: float) -> dict[str, Any]:
    each = []
    for r in range(runs):
        each.append(run_child("blocked", n, str(backlog), quiet))
        _show(f"blocked#{r + 1}", each[-1])
    return {"all_runs": each, "median": _median(each)}


def report(results: dict[str, Any]) -> None:
    print()
    d = results.get("drain")
    if d:
        for base, limited in DRAIN_PAIRS:
            for metric in ("with_startup_per_s", "steady_per_s"):
                ratio = d[f"{limited}_ratio_{metric}"]
                met = "yes" if ratio["of_medians"] >= TARGET_RATIO else "NO"
                print(
                    f"drain {metric:18} {base:10} {d[base][metric]:7,.0f}/s  "
                    f"{limited:6} {d[limited][metric]:7,.0f}/s  ratio {ratio['of_medians']:.2f} "
                    f"(paired {', '.join(f'{p:.2f}' for p in ratio['paired'])})  "
                    f">= {TARGET_RATIO} {met}"
                )
        for name in DRAIN_JOBS:
            m = d[name]
            print(
                f"drain {name:10} worker CPU {m['cpu_us_per_exec']:4.0f} us/exec, claims "
                f"{m['claims']:4.0f}, claim op {m['claim_op_us_per_exec']:5.1f} us/exec, "
                f"{m['claim_rows_changed_per_exec']:.2f} rows changed/exec, most running "
                f"on one gate seen {m['max_running_per_gate_seen']:.0f}"
            )
    b = results.get("blocked")
    if b:
        m = b["median"]
        for what in ("base_keyed", "base_other_job", "keyed", "other_job"):
            met = "yes" if m[f"{what}_p95_ms"] <= TARGET_START_MS else "NO"
            print(
                f"start latency {what:15} p50 {m[f'{what}_p50_ms']:6.2f} ms  "
                f"p95 {m[f'{what}_p95_ms']:6.2f} ms  max {m[f'{what}_max_ms']:7.2f} ms"
                + (f"  (p95 <= {TARGET_START_MS:g} ms: {met})" if "base" not in what else "")
            )
            print(
                "    slowest sample (medians over runs): "
                f"enqueue {m[f'{what}_worst_enqueue_ms']:.2f} ms, "
                f"to claim {m[f'{what}_worst_to_claim_ms']:.2f} ms, claim to handler "
                f"{m[f'{what}_worst_claim_to_handler_ms']:.2f} ms"
            )
        print(
            f"backlog {m['backlog']:,.0f}: enqueue {m['backlog_enqueue_s']:.2f} s, all parked "
            f"{m['backlog_parked_after_s']:.2f} s after, by {m['parking_claims']:.0f} claims "
            f"(writer time {m['parking_claims_total_ms']:.0f} ms in all, "
            f"{m['parking_us_per_row']:.1f} us/row, longest claim "
            f"{m['parking_claim_max_ms']:.1f} ms); another key started meanwhile: first "
            f"{m['during_parking_first_ms']:.0f} ms, max {m['during_parking_max_ms']:.0f} ms"
        )
        print(
            f"claims behind the parked backlog: op p50 {m['claim_op_behind_backlog_p50_ms']:.3f}"
            f" ms, p95 {m['claim_op_behind_backlog_p95_ms']:.3f} ms (writer thread)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description="qanat flow-control benchmarks",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--only", nargs="+", choices=WORKLOADS, help="workloads to run")
    parser.add_argument("--runs", type=int, default=None, help="runs per workload (median)")
    parser.add_argument("--quick", action="store_true", help="small sizes, one run each")
    parser.add_argument("--child", choices=WORKLOADS, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--extra", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(child(args.child, Path(args.dir), args.n, args.extra)))
        return

    runs = args.runs or (1 if args.quick else 3)
    quiet = 1.0 if args.quick else 10.0
    chosen = [w for w in WORKLOADS if not args.only or w in args.only]
    helpers = _bench_helpers()
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": " ".join(["python", "benchmarks/flow.py", *sys.argv[1:]]),
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "platform": platform.platform(),
        },
        "qanat": helpers._git_rev(),
        "runs": runs,
    }
    start = time.perf_counter()
    if "drain" in chosen:
        results["drain"] = suite_drain(DRAIN_N_QUICK if args.quick else DRAIN_N, runs, quiet)
    if "blocked" in chosen:
        results["blocked"] = suite_blocked(
            SAMPLES_QUICK if args.quick else SAMPLES,
            BACKLOG_QUICK if args.quick else BACKLOG,
            runs,
            quiet,
        )
    results["seconds"] = time.perf_counter() - start
    report(results)
    OUT.mkdir(exist_ok=True)
    path = OUT / f"flow-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"\n{results['seconds']:.0f}s; written to {path}")


if __name__ == "__main__":
    main()
