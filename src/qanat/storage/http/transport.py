"""The client side of the node protocol's transport: one keep-alive HTTP/1.1 connection
pool (``h1.H1Client`` for http://, httpx for https:// and test transports), the bearer
token, retries of network blips, the node's clock, and errors that say what went wrong.

Retries: a request that failed on the network (connection refused or reset, a timeout,
a 502/503/504 from a proxy) is sent again after a back-off (50 ms doubling to 2 s,
full jitter) for up to ``retry_for`` seconds, flagged ``retry`` when it may have been
applied already; the node then answers from what storage holds (see
``qanat.server.node``), so a retried report is applied once.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import httpx

from qanat._aio import raise_if_cancelled
from qanat.errors import PayloadTooLarge, QanatError, StorageError
from qanat.storage.http import wire
from qanat.storage.http.h1 import H1Client, Response, uses_h1
from qanat.storage.http.protocol import NOW_HEADER, PREFIX
from qanat.storage.offset import ClockOffset

#: Exceptions a node may answer with that the client raises as the same class.
_KNOWN: dict[str, type[Exception]] = {
    "ValueError": ValueError,
    "KeyError": KeyError,
    "TypeError": TypeError,
    "StorageError": StorageError,
    "PayloadTooLarge": PayloadTooLarge,
}

#: Before these, nothing reached the node: a retry cannot double anything.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class NodeError(StorageError):
    """The node answered with an error that is not a storage result."""


class Transport:
    """HTTP to one node, with its token, retries and clock offset."""

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        retry_for: float = 30.0,
        timeout: float = 30.0,
        transport: Any = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.retry_for = retry_for
        self.timeout = timeout
        # tests: an in-process node (an ASGI app) or an httpx transport of their own
        self._transport = transport
        self.client: httpx.AsyncClient | H1Client | None = None
        #: node clock minus this host's clock, from the answer with the shortest trip
        self._clock = ClockOffset()

    def start(self) -> None:
        headers = {"user-agent": "qanat-worker"}
        if self.token is not None:
            headers["authorization"] = f"Bearer {self.token}"
        if uses_h1(self.url, self._transport):
            self.client = H1Client(self.url + PREFIX, headers, timeout=self.timeout)
            return
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=32, keepalive_expiry=60)
        kw: dict[str, Any] = {}
        if isinstance(self._transport, httpx.AsyncBaseTransport):
            kw["transport"] = self._transport
        elif self._transport is not None:
            kw["transport"] = httpx.ASGITransport(app=self._transport)
        self.client = httpx.AsyncClient(
            base_url=self.url + PREFIX,
            headers=headers,
            timeout=httpx.Timeout(self.timeout, connect=5.0),
            limits=limits,
            http1=True,
            http2=False,
            **kw,
        )

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    def clock(self) -> float:
        return self._clock.clock()

    @property
    def offset(self) -> float:
        """The node's clock minus this host's."""
        return self._clock.offset

    def _observe(self, sent: float, response: httpx.Response | Response) -> None:
        value = response.headers.get(NOW_HEADER)
        if value is not None:
            self._clock.observe(float(value), sent)

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        timeout: float | None = None,
        retry_for: float | None = None,
    ) -> tuple[int, Any]:
        """Send one request; ``(status, decoded JSON)`` for 200 and 409, retrying network
        blips, raising a clear ``StorageError`` for everything else."""
        client = self.client
        if client is None:
            raise StorageError(f"the node storage {self.url} is not open")
        content = None if body is None else wire.dumps(body)
        budget = self.retry_for if retry_for is None else retry_for
        give_up = time.monotonic() + budget
        failures = 0
        maybe_sent = False
        while True:
            headers = {"x-qanat-retry": "1"} if maybe_sent else None
            sent = time.time()
            try:
                if isinstance(client, H1Client):
                    response: httpx.Response | Response = await client.request(
                        method, path, content=content, headers=headers, timeout=timeout
                    )
                else:
                    response = await client.request(
                        method,
                        path,
                        content=content,
                        headers=headers,
                        timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                    )
            except httpx.TransportError as exc:
                raise_if_cancelled()
                if not isinstance(exc, _NOT_SENT):
                    maybe_sent = True
                failures += 1
                if time.monotonic() >= give_up:
                    raise StorageError(
                        f"cannot reach the qanat node at {self.url}: {_describe(exc)}"
                    ) from None
                await _back_off(failures, give_up)
                continue
            if response.status_code in (502, 503, 504) and time.monotonic() < give_up:
                failures += 1
                maybe_sent = True
                await _back_off(failures, give_up)
                continue
            self._observe(sent, response)
            return self._answer(response)

    def item_error(self, item: dict[str, Any]) -> Exception:
        """The exception for one refused item of a batch (``{"error", "type"}``)."""
        cls = _KNOWN.get(str(item.get("type") or ""), NodeError)
        return cls(str(item["error"]))

    def _answer(self, response: httpx.Response | Response) -> tuple[int, Any]:
        status = response.status_code
        if status in (200, 409):
            return status, wire.loads(response.content)
        message = _error_text(response)
        if status == 401:
            raise StorageError(
                f"the qanat node at {self.url} refused the token (401 Unauthorized): "
                f"{message}; pass Queue(token=...) or set QANAT_TOKEN to the node's token"
            )
        if status == 413:
            raise PayloadTooLarge(f"the qanat node at {self.url} refused a request: {message}")
        kind = _error_type(response)
        cls = _KNOWN.get(kind or "")
        if status == 400 and cls is not None:
            raise cls(message)
        if status == 404:
            raise NodeError(
                f"{self.url} is not a qanat node speaking protocol {PREFIX} (404 for "
                f"{_path(response)}): {message}"
            )
        raise NodeError(f"the qanat node at {self.url} answered {status}: {message}")


def _describe(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text


def _error_text(response: httpx.Response | Response) -> str:
    try:
        data = wire.loads(response.content)
    except Exception:
        return response.text[:200] or response.reason_phrase
    if isinstance(data, dict) and "error" in data:
        return str(data["error"])
    return response.text[:200]


def _error_type(response: httpx.Response | Response) -> str | None:
    try:
        data = wire.loads(response.content)
    except Exception:
        return None
    return data.get("type") if isinstance(data, dict) else None


def _path(response: httpx.Response | Response) -> str:
    return response.path if isinstance(response, Response) else response.request.url.path


async def _back_off(failures: int, give_up: float) -> None:
    # full jitter: many workers cut off together do not come back in lockstep
    cap = min(2.0, 0.05 * 2 ** min(failures, 8))
    delay = random.uniform(cap / 2, cap)
    await asyncio.sleep(max(0.0, min(delay, give_up - time.monotonic())))


__all__ = ["NodeError", "QanatError", "Transport"]
