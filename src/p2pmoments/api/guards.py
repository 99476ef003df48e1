"""The four checks every request passes, outermost first: errors become JSON; the Host
header must name a loopback host (against DNS rebinding); a browser request must come
from our own origin (against CSRF); and all but /health need the token, or the web
app's session cookie (webapp.py), with which a change also needs the session's CSRF
token. Requests so malformed that aiohttp's HTTP parser answers them itself get the
same JSON error body: serve the app with `ApiRunner`, which also bounds its
connections against slow clients (issue 18): a request head must arrive within
IDLE_TIMEOUT of the connection opening or of its last answer, and at MAX_CONNECTIONS
(MAX_PER_HOST from one address) the connection idle longest makes room."""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from p2pmoments.api.base import (
    ORIGIN,
    PUBLIC_PATHS,
    STATUS_CODES,
    WEB_GATE,
    ApiError,
    Handler,
    error_body,
    has_bearer,
    loopback_authority,
)
from p2pmoments.core.admission import Client, control_room

__all__ = [
    "IDLE_TIMEOUT",
    "MAX_CONNECTIONS",
    "MAX_PER_HOST",
    "MIDDLEWARES",
    "ApiRunner",
    "connection_lost",
]

log = logging.getLogger(__name__)

# A connection must send a whole request head within IDLE_TIMEOUT of opening or of its
# last answer, or it is closed (as the peer port's first message, spec/transport.md
# section 5); aiohttp's keep-alive timer does both, but only while no request is in
# hand, so a long upload or an event stream is never cut.
IDLE_TIMEOUT = 5.0
# Far above what the CLI and a few browsers use (a browser opens at most 6 per host),
# far below the 1,024 open files a daemon may be held to.
MAX_CONNECTIONS = 256
MAX_PER_HOST = 192  # local processes all come from 127.0.0.1 unless they pick another
# A connection not yet read from is not closed to make room in its first second: accepted
# in the same burst as a flood, its whole request may still be waiting to be read.
UNREAD_GRACE = 1.0
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Connection: close\r\nRetry-After: 1\r\nContent-Length: %d\r\n\r\n%s"
)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error into {"error": {"code", "message"}} with the right status."""
    try:
        return await handler(request)
    except ApiError:
        raise
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = STATUS_CODES.get(exc.status, "error")
        message = exc.reason if exc.text in (None, "", f"{exc.status}: {exc.reason}") else exc.text
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        raise ApiError(exc.status, code, message or exc.reason, headers=headers) from None
    except Exception:
        log.exception("internal error serving %s %s", request.method, request.path)
        raise ApiError(500, "internal", "internal error; see the daemon's log") from None


@web.middleware
async def host_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse any Host that is not loopback, on every endpoint (DNS rebinding)."""
    host = request.headers.get("Host", "")
    if loopback_authority(host) is None:
        raise ApiError(403, "forbidden_host", f"Host {host!r} is not a loopback name or address")
    return await handler(request)


@web.middleware
async def origin_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse browser requests made by pages of any other origin (CSRF)."""
    if request.app[WEB_GATE].is_entry(request):
        return await handler(request)
    origin = request.headers.get("Origin")
    if origin is not None:
        # Compared parsed, default port filled in: the Host passed host_middleware.
        match = ORIGIN.fullmatch(origin)
        theirs = loopback_authority(match["authority"]) if match else None
        ours = loopback_authority(request.headers.get("Host", ""))
        if (
            theirs is None
            or ours is None
            or (theirs[0], theirs[1] or 80) != (ours[0], ours[1] or 80)
        ):
            raise ApiError(403, "forbidden_origin", f"requests from {origin!r} are not allowed")
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        raise ApiError(403, "forbidden_origin", f"{fetch_site} requests are not allowed")
    return await handler(request)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Demand the bearer token (or a web app session) everywhere but /health and the app's files."""
    gate = request.app[WEB_GATE]
    if (
        request.path not in PUBLIC_PATHS
        and not gate.is_public(request)
        and not has_bearer(request)
        and gate.session(request) is None
    ):
        raise ApiError(
            401,
            "unauthorized",
            "a bearer token is needed: Authorization: Bearer <contents of the token file>; "
            "or open the web app with `p2pmoments open`",
            headers={"WWW-Authenticate": 'Bearer realm="p2pmoments"'},
        )
    return await handler(request)


class _JsonErrorHandler(RequestHandler):
    """aiohttp's connection handler, answering what its HTTP parser refuses (no Host, a
    line over 8190 bytes, garbage) with our JSON error body instead of text/plain. Those
    errors come before any middleware (aiohttp issue 3287), so only this can shape them."""

    __slots__ = ("_answering", "_heard", "_idle_since", "_opened", "lost")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Take the connection, then make room for it or refuse it (control_room)."""
        now = self._loop.time()
        self._idle_since = self._opened = now
        self._heard = False
        # A request read and not yet answered. aiohttp's own flags leave a gap between
        # taking a request off its queue and starting to answer it (a loop iteration on
        # Python 3.11): closed then, a client's answer was cut short.
        self._answering = False
        self.lost = asyncio.Event()  # set when the client goes (see connection_lost)
        super().connection_made(transport)
        manager = self._manager
        if manager is None or self.transport is None:
            return
        host = _host(self)
        others = [
            Client(
                conn=h,
                host=_host(h),
                idle_since=h._idle_since,
                busy=h._answering or h._request_in_progress or bool(h._messages),
                heard=h._heard,
                opened=h._opened,
            )
            for h in manager.connections
            if h is not self and isinstance(h, _JsonErrorHandler) and h.transport is not None
        ]
        ok, evict = control_room(
            others,
            host,
            max_conns=MAX_CONNECTIONS,
            max_per_host=MAX_PER_HOST,
            now=now,
            grace=UNREAD_GRACE,
        )
        for handler in evict:
            handler.force_close()
        if not ok:
            body = error_body("busy", "every connection is in use; try again in a moment")
            self.transport.write(REFUSAL % (len(body), body.encode()))
            self.force_close()
            log.debug("refused a connection from %s: every connection is in use", host)

    def data_received(self, data: bytes) -> None:
        self._heard = True
        super().data_received(data)
        if self._messages:
            self._answering = True

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self.lost.set()

    async def _handle_request(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super()._handle_request(*args, **kwargs)
        finally:
            self._idle_since = self._loop.time()
            self._answering = bool(self._messages)

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            log.error("internal error serving %s", request.path, exc_info=exc)
            body = error_body("internal", "internal error; see the daemon's log")
        else:
            reason = exc.message if isinstance(exc, HttpProcessingError) else message
            reason = (reason or "malformed request")[:200]  # it may quote the request
            log.debug("refused a malformed request: %s", reason)
            phrase = next((s.phrase for s in HTTPStatus if s == status), "Error")
            body = error_body(STATUS_CODES.get(status, "bad_request"), f"{phrase}: {reason}")
        if request.writer.output_size > 0:  # an answer is under way: only closing is left
            raise ConnectionError("cannot answer with an error after the answer began")
        response = web.Response(status=status, text=body, content_type="application/json")
        response.force_close()
        return response


def connection_lost(request: web.BaseRequest) -> asyncio.Event:
    """An event set when the client that sent `request` goes: a long answer (an event
    stream) can end at once instead of at its next write."""
    protocol = request.protocol
    return protocol.lost if isinstance(protocol, _JsonErrorHandler) else asyncio.Event()


def _host(handler: RequestHandler) -> str:
    peer = handler.transport.get_extra_info("peername") if handler.transport else None
    return str(peer[0]) if peer else ""


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        # As web.Server.__call__, with our handler class (no public way to choose it).
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class ApiRunner(web.AppRunner):
    """An AppRunner whose connections answer even unparseable requests in JSON, and
    are bounded in time and number (IDLE_TIMEOUT, MAX_CONNECTIONS, MAX_PER_HOST)."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        kwargs.setdefault("keepalive_timeout", IDLE_TIMEOUT)
        super().__init__(app, **kwargs)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _JsonErrorServer  # the same object, made by the app as usual
        return server


MIDDLEWARES = (errors_middleware, host_middleware, origin_middleware, auth_middleware)
