"""The worker protocol of the orchestration node: routes under ``/node/v1`` over the
queue's storage (written down in ``docs/node.md``).

The node is a thin, stateless front of its storage: every answer is computed from what
storage holds, so a node killed and started again loses nothing; a worker's next
request (retried by its client) simply reaches the new process. In memory are only
the change counter of the long poll (``boot`` names the process, so a client seeing a
new boot knows to look again) and the open long polls themselves.

Routes: ``GET /hello`` (protocol version, boot, clock), ``POST /register``,
``POST /claim`` (a batch claim with a lease id per execution), ``POST /heartbeat``
(renew all of a worker's leases, answered with what it must stop), ``POST /report``
(a batch of fenced writes, one status per item), ``POST /call/<method>`` (any other
contract method), ``GET /watch`` (long poll, answered when storage changes). Every
answer carries the node's clock (``x-qanat-now``): clients time nothing themselves.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from qanat._aio import wait_event
from qanat._ids import new_id
from qanat.errors import PayloadTooLarge, QanatError, StorageError
from qanat.server import reports
from qanat.storage.http import wire
from qanat.storage.http.protocol import (
    NOW_HEADER,
    PREFIX,
    PROTOCOL,
    REPORTS,
    WATCH_HOLD,
    WATCH_IDS,
    lease_id,
    refused,
    signature,
)

if TYPE_CHECKING:
    from qanat.queue import Queue

log = logging.getLogger("qanat.node")

#: Errors of a bad request (answered 400 with their type, raised again by the client).
BAD_REQUEST = (ValueError, KeyError, TypeError, StorageError, PayloadTooLarge)
#: Room on top of ``max_payload`` for the envelope of one request.
ENVELOPE = 64 << 10


class BadRequest(Exception):
    """A request the node cannot decode: 400 with this message."""


class Node:
    """The node's state: its queue's storage, the change counter, the long polls."""

    def __init__(self, queue: Queue, *, watch_hold: float = WATCH_HOLD) -> None:
        self.queue = queue
        self.storage = queue.storage
        # the node's commits are made for workers and clients elsewhere: wake their
        # long polls at once, not after the delay that suits a worker's own commits
        self.storage.local_wake_delay = 0.0
        self.storage.serves_others = True
        self.boot = new_id()
        self.seq = 0
        self.watch_hold = watch_hold
        #: a request body over this is refused with 413 (payloads are JSON-escaped once)
        self.body_limit = 2 * queue.max_payload + ENVELOPE
        self._changed: asyncio.Event | None = None
        self._counter: asyncio.Task[None] | None = None
        self._lock: asyncio.Lock | None = None
        self.closing = False

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Open the queue's storage and follow its changes (also done on first request)."""
        if self._counter is not None:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._counter is not None:
                return
            await self.queue.ensure_open()
            self._changed = asyncio.Event()
            self.queue.ticker.start()
            self._counter = asyncio.get_running_loop().create_task(
                self._count(), name="qanat-node-changes"
            )

    def stop_watches(self) -> None:
        """Answer every open long poll now (a stopping node must not wait for them)."""
        self.closing = True
        if self._changed is not None:
            self._changed.set()

    async def stop(self) -> None:
        self.stop_watches()
        task, self._counter = self._counter, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        await self.queue.stop()

    async def _count(self) -> None:
        ticker = self.queue.ticker
        while True:
            await ticker.event().wait()
            self.seq += 1
            ev, self._changed = self._changed, asyncio.Event()
            if ev is not None:
                ev.set()

    # --- plumbing ---------------------------------------------------------------------

    def answer(self, data: Any, status: int = 200) -> Response:
        headers = {NOW_HEADER: repr(self.storage.clock())}
        return Response(wire.dumps(data), status, headers, media_type="application/json")

    def error(self, status: int, message: str, kind: str | None = None) -> Response:
        body: dict[str, Any] = {"error": message}
        if kind is not None:
            body["type"] = kind
        return self.answer(body, status)

    async def body(self, request: Request) -> Any:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.body_limit:
            raise PayloadTooLarge(self._too_large(int(length)))
        raw = await request.body()
        if len(raw) > self.body_limit:
            raise PayloadTooLarge(self._too_large(len(raw)))
        if not raw:
            return {}
        try:
            return wire.loads(raw)
        except ValueError as exc:
            raise BadRequest(f"the request body is not JSON: {exc}") from None

    def _too_large(self, size: int) -> str:
        return (
            f"request body of {size} bytes is over the node's limit of {self.body_limit} "
            f"bytes (Queue(max_payload={self.queue.max_payload}) plus the envelope)"
        )

    def decode(self, method: str, given: Any) -> dict[str, Any]:
        """The keyword arguments of contract method ``method`` from a JSON object."""
        if not isinstance(given, dict):
            raise BadRequest(f"the arguments of {method} must be a JSON object")
        sig = signature(method)
        unknown = sorted(set(given) - set(sig.params))
        if unknown:
            raise BadRequest(f"unknown argument(s) {', '.join(unknown)} for {method}")
        missing = sorted(sig.required - set(given))
        if missing:
            raise BadRequest(f"missing argument(s) {', '.join(missing)} for {method}")
        try:
            return {k: sig.args[k](v) for k, v in given.items()}
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            raise BadRequest(f"invalid arguments for {method}: {exc}") from None

    async def guarded(self, request: Request, handler: Any) -> Response:
        """Run a handler: decode errors are 400, oversized bodies 413, storage's refusals
        of bad arguments 400 (with their type), anything else 500 (logged)."""
        try:
            await self.start()
            result: Response = await handler(request)
            return result
        except PayloadTooLarge as exc:
            return self.error(413, str(exc), "PayloadTooLarge")
        except BadRequest as exc:
            return self.error(400, str(exc))
        except BAD_REQUEST as exc:
            return self.error(400, str(exc), type(exc).__name__)
        except QanatError as exc:
            return self.error(400, str(exc), "StorageError")
        except Exception as exc:
            log.exception("qanat node: %s %s failed", request.method, request.url.path)
            return self.error(500, f"{type(exc).__name__}: {exc}")

    # --- routes -----------------------------------------------------------------------

    async def hello(self, request: Request) -> Response:
        return self.answer(
            {
                "protocol": PROTOCOL,
                "boot": self.boot,
                "now": self.storage.clock(),
                "max_payload": self.queue.max_payload,
                "searches": self.storage.searches,
            }
        )

    async def register(self, request: Request) -> Response:
        body = await self.body(request)
        try:
            worker, host, pid = str(body["worker_id"]), str(body["host"]), int(body["pid"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BadRequest(f"register needs worker_id, host and pid: {exc}") from None
        if body.get("protocol", PROTOCOL) != PROTOCOL:
            raise BadRequest(
                f"worker {worker} speaks protocol {body.get('protocol')!r}, the node {PROTOCOL}"
            )
        # registered at the node's time, whatever the worker's clock says
        await self.storage.register_worker(worker, host, pid, await self.storage.now())
        log.info(
            "qanat node: worker %s registered (host %s, pid %s, capacity %s)",
            worker,
            host,
            pid,
            body.get("capacity"),
        )
        return self.answer({"result": None})

    async def claim(self, request: Request) -> Response:
        args = self.decode("claim", await self.body(request))
        recs = await self.storage.claim(**args)
        next_wake = self.storage.next_wake
        owner = args["owner"]
        leases = {r.id: lease_id(owner, r.claims) for r in recs}
        return self.answer({"result": recs, "leases": leases, "next_wake": next_wake})

    async def heartbeat(self, request: Request) -> Response:
        args = self.decode("renew", await self.body(request))
        return self.answer({"result": await self.storage.renew(**args)})

    async def call(self, request: Request) -> Response:
        method = request.path_params["method"]
        if method not in _CALLS:
            raise BadRequest(f"unknown node method {method!r}")
        args = self.decode(method, await self.body(request))
        retry = request.headers.get("x-qanat-retry") == "1"
        if method == "enqueue":
            recs = await reports.enqueue_once(self.storage, args["records"], retry)
            leases = {r.id: lease_id(r.owner, r.claims) for r in recs if r.owner is not None}
            return self.answer({"result": recs, "leases": leases})
        seq = self.seq  # before reading: the answer is at least as fresh as this change
        result = await getattr(self.storage, method)(**args)
        if method == "get_many":
            # a waiting client may answer its next reads from this until the next change
            return self.answer({"result": result, "boot": self.boot, "seq": seq})
        return self.answer({"result": result})

    async def report(self, request: Request) -> Response:
        body = await self.body(request)
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise BadRequest("a report carries {'items': [...]}")
        retry = request.headers.get("x-qanat-retry") == "1"
        # one execution's reports in their order; different executions' at once, so
        # that storage can commit their writes together (SQLite groups concurrent ones)
        lanes: dict[Any, list[int]] = {}
        for n, item in enumerate(items):
            args = item.get("args") if isinstance(item, dict) else None
            key = args.get("execution_id") if isinstance(args, dict) else None
            lanes.setdefault(key if key is not None else ("owner", n), []).append(n)
        results: list[Any] = [None] * len(items)

        async def lane(indexes: list[int]) -> None:
            for n in indexes:
                results[n] = await self._item(items[n], retry)

        await asyncio.gather(*(lane(ix) for ix in lanes.values()))
        return self.answer({"results": results})

    async def _item(self, item: Any, retry: bool) -> dict[str, Any]:
        """One report of a batch: decoded, authorized and applied on its own."""
        op = item.get("op") if isinstance(item, dict) else None
        if op not in REPORTS:
            return {"status": 400, "error": f"unknown report {op!r}", "type": "ValueError"}
        given = dict(item.get("args") or {})
        lease = given.pop("lease", None)
        try:
            args = self.decode(op, given)
        except BadRequest as exc:
            return {"status": 400, "error": str(exc), "type": "ValueError"}
        valid, claims = reports.lease_claims(lease, args.get("owner"))
        if not valid:
            self._refused(op, args, "a lease of another owner")
            return {"status": 409, "result": reports.lost(op)}
        try:
            result = await reports.apply(self.storage, op, args, claims, retry)
        except BAD_REQUEST as exc:
            return {"status": 400, "error": str(exc), "type": type(exc).__name__}
        if refused(op, result):
            self._refused(op, args, "it no longer holds the execution")
            return {"status": 409, "result": result}
        return {"status": 200, "result": result}

    def _refused(self, op: str, args: dict[str, Any], why: str) -> None:
        log.info(
            "qanat node: 409 for %s of execution %s by worker %s: %s",
            op,
            args.get("execution_id"),
            args.get("owner"),
            why,
        )

    async def watch(self, request: Request) -> Response:
        boot = request.query_params.get("boot", "")
        try:
            seq = int(request.query_params.get("seq", "-1"))
        except ValueError:
            raise BadRequest("watch: seq must be an integer") from None
        if boot == self.boot and seq == self.seq and not self.closing:
            ev = self._changed
            if ev is not None:
                await wait_event(ev, self.watch_hold)
        answer: dict[str, Any] = {"boot": self.boot, "seq": self.seq}
        jobs = request.query_params.get("jobs")
        if jobs is not None:
            # computed after reading seq: a change meanwhile makes the next poll return
            # the worker's next question ("anything to claim?") answered with the change
            names = [j for j in jobs.split(",") if j]
            answer["jobs"] = names
            answer["ready"] = await self.storage.has_ready(names, self.storage.clock())
        ids = request.query_params.get("ids")
        if ids is not None:
            # a client's next question after a change ("are they finished?"), likewise
            wanted = [i for i in ids.split(",") if i][:WATCH_IDS]
            answer["ids"] = wanted
            answer["records"] = await self.storage.get_many(wanted)
        return self.answer(answer)

    def routes(self) -> dict[str, tuple[str, Any]]:
        """The routes under ``/node/v1``: path -> (HTTP method, handler)."""
        return {
            "/hello": ("GET", self.hello),
            "/register": ("POST", self.register),
            "/claim": ("POST", self.claim),
            "/heartbeat": ("POST", self.heartbeat),
            "/report": ("POST", self.report),
            "/call": ("POST", self.call),  # /call/<method>
            "/watch": ("GET", self.watch),
        }

    def asgi(self) -> ASGIApp:
        """The ASGI app of ``/node/v1/...`` (``scope["path"]`` the full path).

        A dictionary lookup rather than a router: these routes carry every request of
        every worker and client, and a router's matching, middleware and exception
        layers cost as much as some handlers (``guarded`` answers every error)."""
        table = self.routes()

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            path = scope["path"][len(PREFIX) :]
            name, _, rest = path[1:].partition("/")
            route = table.get("/" + name)
            if route is None or (rest and name != "call") or (name == "call" and not rest):
                response = self.error(404, f"no node route {path!r}")
            elif scope["method"] != route[0]:
                response = self.error(405, f"{path} takes {route[0]}, not {scope['method']}")
            else:
                scope["path_params"] = {"method": rest} if rest else {}
                response = await self.guarded(Request(scope, receive), route[1])
            await response(scope, receive, send)

        return app


#: Contract methods callable through ``/call`` (claims, renewals and reports have
#: their own routes; ``register_worker`` is ``/register``).
_CALLS = frozenset(
    {
        "now",
        "lead",
        "resign",
        "enqueue",
        "has_ready",
        "refill",
        "acquire_step",
        "release_step",
        "cancel",
        "pause",
        "resume",
        "restart",
        "pause_job",
        "paused_jobs",
        "wake",
        "get",
        "get_many",
        "query",
        "find_cached",
        "steps",
        "stats",
        "count",
        "status_counts",
        "worker_list",
        "open_waiters",
        "logs",
        "unregister_worker",
        "workers",
        "expire_owner",
        "purge",
        "send",
        "events",
        "trigger_failures",
        "waiter",
        "awaited",
        "purge_events",
    }
)
