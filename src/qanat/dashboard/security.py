"""The dashboard's guard: who may see it (the token, once per browser: sign-in form or
``?token=``, then a session cookie), what a state change must carry (same origin and the
CSRF token), and the headers every answer gets (CSP, no-store, no CORS).

The bind rule and the token comparison are ``qanat.server.auth``'s: one copy for every
server. The session cookie holds an HMAC of the token, never the token itself, so it is
worthless elsewhere and survives a restart of the dashboard (same token, same cookie).
The CSRF token is a double-submit value: a random cookie the page echoes in each form;
a page on another origin can neither read the cookie nor make the browser send it
(SameSite=Strict), and the origin check refuses it before that.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.datastructures import URL, Headers
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from qanat.server.auth import bearer, token_matches

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SESSION_COOKIE = "qanat_session"
CSRF_COOKIE = "qanat_csrf"
CSRF_FIELD = "csrf"

#: SPEC §11 and issue 11: no inline script or style, nothing from elsewhere, no framing.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'"
)
SECURITY_HEADERS = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),  # no-referrer would make Origin "null"
)
SAFE_METHODS = ("GET", "HEAD")
#: The largest form the guard reads (a job input or event up to the default 16 MB cap).
MAX_BODY = 17 * 1024 * 1024
#: Paths any visitor may fetch: the sign-in form and the (non-data) CSS and script.
OPEN_PATHS = ("/signin", "/static/")


def session_value(token: str) -> str:
    """What the session cookie holds for ``token``: an HMAC, not the token."""
    return hmac.new(token.encode(), b"qanat-dashboard-session", hashlib.sha256).hexdigest()


def csrf_of(request: Request) -> str:
    """The CSRF token of this browser (set by the guard on the request's scope)."""
    value: str = request.scope["qanat.csrf"]
    return value


def same_origin(headers: Headers, url: URL) -> bool:
    """Whether a request comes from a page of this dashboard's own origin. Each of
    ``Origin`` (unless "null") and ``Sec-Fetch-Site`` that the browser sent must say so,
    and at least one must be there: every browser that could be tricked sends one."""
    origin = headers.get("origin")
    site = headers.get("sec-fetch-site")
    known = False
    if origin is not None and origin != "null":
        if origin != f"{url.scheme}://{headers.get('host', url.netloc)}":
            return False
        known = True
    if site is not None:
        if site != "same-origin":
            return False
        known = True
    return known


class Guard:
    """ASGI middleware in front of the dashboard's routes (see the module docstring)."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token
        self.session = session_value(token) if token is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope.get("method") not in SAFE_METHODS:
            # the guard and then the route read the form: each gets the body replayed
            body, source = await _read_body(receive), receive
            if body is None:
                await _with_headers(
                    PlainTextResponse("request body too large", 413),
                    scope,
                    receive,
                    send,
                    False,
                    None,
                    "/",
                )
                return
            request = Request(scope, _replay(body, source))
            receive = _replay(body, source)
        else:
            request = Request(scope, receive)
        path, root = scope.get("path", "/"), scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        csrf = request.cookies.get(CSRF_COOKIE)
        new_csrf = csrf is None or len(csrf) != 43
        scope["qanat.csrf"] = secrets.token_urlsafe(32) if new_csrf else csrf
        is_static = path.startswith("/static/")
        cookie_path = scope.get("root_path") or "/"
        response = await self._refusal(request, path)
        if response is not None:
            await _with_headers(response, scope, receive, send, is_static, None, cookie_path)
            return
        set_csrf = scope["qanat.csrf"] if new_csrf and not is_static else None
        await _with_headers(self.app, scope, receive, send, is_static, set_csrf, cookie_path)

    def authorised(self, request: Request) -> bool:
        """Whether the request carries the token (bearer) or this dashboard's session."""
        if self.token is None:
            return True
        if token_matches(bearer(request.headers.get("authorization")), self.token):
            return True
        assert self.session is not None
        return token_matches(request.cookies.get(SESSION_COOKIE), self.session)

    async def _refusal(self, request: Request, path: str) -> Response | None:
        """The answer that stops this request here, or None to let it through."""
        if self.token is not None:
            given = request.query_params.get("token")
            if given is not None and request.method in SAFE_METHODS:
                return self._token_link(request, given)
            if not self.authorised(request) and not path.startswith(OPEN_PATHS):
                if request.method in SAFE_METHODS and "text/html" in request.headers.get(
                    "accept", ""
                ):
                    target = request.url.path + (
                        f"?{request.url.query}" if request.url.query else ""
                    )
                    base = request.scope.get("root_path", "")
                    return RedirectResponse(f"{base}/signin?{urlencode({'next': target})}", 303)
                return PlainTextResponse("sign in first: this dashboard needs its token", 401)
        if request.method not in SAFE_METHODS:
            return await self._check_post(request)
        return None

    def _token_link(self, request: Request, given: str) -> Response:
        """``?token=T``: the same page without it (a URL lands in logs and history), with
        the session cookie when the token is right."""
        query = urlencode([(k, v) for k, v in parse_qsl(request.url.query) if k != "token"])
        target = request.url.path + (f"?{query}" if query else "")
        assert self.token is not None
        if not token_matches(given, self.token):
            return PlainTextResponse("wrong token", 401)
        response = RedirectResponse(target, 303)
        set_session(response, request, self.token)
        return response

    async def _check_post(self, request: Request) -> Response | None:
        """A state change: from our own origin and with the CSRF token, else 403. A
        script holding the bearer token is no browser that could be tricked: it passes."""
        if self.token is not None and token_matches(
            bearer(request.headers.get("authorization")), self.token
        ):
            return None
        if not same_origin(request.headers, request.url):
            return PlainTextResponse("refused: the request does not come from this dashboard", 403)
        form = await request.form()
        sent = form.get(CSRF_FIELD)
        cookie = request.cookies.get(CSRF_COOKIE)
        if not isinstance(sent, str) or cookie is None or not hmac.compare_digest(sent, cookie):
            return PlainTextResponse("refused: missing or wrong CSRF token", 403)
        return None


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body (a form of the dashboard), or None past ``MAX_BODY``."""
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > MAX_BODY:
            return None
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` once, then passes on what comes after (such as
    a disconnect)."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


def set_session(response: Response, request: Request, token: str) -> None:
    """Give the browser its session cookie (HttpOnly, SameSite=Strict) for ``token``."""
    response.set_cookie(
        SESSION_COOKIE,
        session_value(token),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path=request.scope.get("root_path") or "/",
    )


async def _with_headers(
    app: ASGIApp,
    scope: Scope,
    receive: Receive,
    send: Send,
    is_static: bool,
    set_csrf: str | None,
    cookie_path: str,
) -> None:
    """Run ``app`` adding the security headers (and the CSRF cookie when new) to its
    response start; data pages get ``Cache-Control: no-store``; CORS headers never."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [
                (k, v)
                for k, v in message.get("headers", [])
                if not k.lower().startswith(b"access-control-")
                and k.lower() not in (b"cache-control",)
            ]
            headers.extend(SECURITY_HEADERS)
            headers.append((b"cache-control", b"public, max-age=300" if is_static else b"no-store"))
            if set_csrf is not None:
                cookie = f"{CSRF_COOKIE}={set_csrf}; Path={cookie_path}; SameSite=Strict; HttpOnly"
                headers.append((b"set-cookie", cookie.encode()))
            message["headers"] = headers
        await send(message)

    await app(scope, receive, sending)
