"""The web app's server side: its pages, login as Jupyter does it, sessions, live events.

The daemon serves the app at `/` on the control API's own port (same origin as
/api/v1). Getting in (spec/openapi.yaml, "The web app and its sessions"):

1. `p2pmoments open` asks, with the bearer token, for a login link: a
   single-use token valid LOGIN_TTL seconds, kept only in memory.
2. The browser opens /login?token=...; the daemon swaps the token for a session
   (a random id in an HttpOnly, SameSite=Strict cookie) and redirects to `/`,
   so the token leaves the address bar at once.
3. The page's API calls carry the cookie. Those that change something must
   also carry X-CSRF-Token (the session's own token, read from GET
   /api/v1/session) and an Origin equal to ours.

Sessions outlive a daemon restart: their ids are kept hashed (SHA-256) in a
0600 file, so a page left open reconnects. Logging out removes one.

Pages carry a strict Content-Security-Policy (no inline script, nothing from
another origin, Trusted Types so no string can become HTML) and every response
carries the usual headers against sniffing, framing and cross-origin reads.

Why so long: the web app's whole server side is here (pages, login, sessions, CSRF,
the event stream, reading codes from images), apart from the API it builds on.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import hmac
import html
import importlib.resources
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from p2pmoments import qr
from p2pmoments.api.base import (
    API_PREFIX,
    NODE,
    SANDBOX_CSP,
    WEB_GATE,
    ApiError,
    WebGate,
    has_bearer,
)
from p2pmoments.api.guards import connection_lost
from p2pmoments.core.admission import stream_room
from p2pmoments.events import Event
from p2pmoments.files import write_file_atomically

__all__ = [
    "ASSETS",
    "CSRF_HEADER",
    "SESSIONS",
    "Sessions",
    "cookie_name",
    "setup",
]

log = logging.getLogger(__name__)

LOGIN_TTL = 120.0  # seconds a login link works, once
SESSION_TTL = 30 * 86400.0  # seconds a session lasts from login
MAX_SESSIONS = 32  # the oldest goes first
MAX_LOGIN_TOKENS = 16
CSRF_HEADER = "X-CSRF-Token"
HEARTBEAT = 15.0  # seconds between keep-alive comments on an idle event stream
RETRY_MS = 2000  # how soon a browser reconnects a dropped event stream
# Event streams: a browser holds at most 6 connections to a host, so a session (or the
# bearer token's holders, as one) needs no more than MAX_STREAMS_PER_SESSION; when all
# MAX_STREAMS are taken, the session holding the most gives up its oldest
# (core.admission.stream_room), and a refused page says so and tries again (live.js).
MAX_STREAMS = 64
MAX_STREAMS_PER_SESSION = 8
STREAM_RETRY_AFTER = 10  # seconds, in a refusal's Retry-After
MAX_IMAGE = 20 * 1024 * 1024  # a photo of a pairing code

# The app's files, shipped as package data in p2pmoments/web/. The list is explicit:
# only these names are ever served, and a test keeps it equal to the directory.
ASSETS = (
    "index.html",
    "style.css",
    "icon.svg",
    "main.js",
    "api.js",
    "state.js",
    "dom.js",
    "live.js",
    "feed.js",
    "compose.js",
    "viewer.js",
    "circles.js",
    "chat.js",
    "friends.js",
    "pair.js",
    "status.js",
    "devices.js",
)
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}

PAGE_CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob:",
        "media-src 'self' blob:",
        "connect-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    )
)
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(self), microphone=(), geolocation=(), payment=(), usb=()",
}


def cookie_name(port: int) -> str:
    """The session cookie's name. Cookies ignore ports, so the port is in the name:
    two daemons on one host keep separate sessions."""
    return f"p2pm_session_{port}"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class _Session:
    """A logged-in browser: the SHA-256 of its cookie, and when it ends."""

    digest: str
    created: float
    expires: float


class Sessions:
    """Login tokens (in memory, single use) and sessions (kept hashed in a 0600 file)."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self._logins: dict[str, float] = {}  # token digest -> expiry
        self._sessions: dict[str, _Session] = {}  # cookie digest -> session
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<Sessions {len(self._sessions)} sessions, {len(self._logins)} login tokens>"

    def load(self) -> None:
        """Read the sessions file, if any (blocking); unreadable means no sessions."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            now = self.clock()
            for item in data["sessions"]:
                s = _Session(
                    digest=str(item["digest"]),
                    created=float(item["created"]),
                    expires=float(item["expires"]),
                )
                if s.expires > now:
                    self._sessions[s.digest] = s
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring the unreadable web sessions file %s: %s", self.path, exc)

    async def _save(self) -> None:
        items = [
            {"digest": s.digest, "created": s.created, "expires": s.expires}
            for s in self._sessions.values()
        ]
        data = json.dumps({"sessions": items}).encode()
        await asyncio.to_thread(write_file_atomically, self.path, data, mode=0o600)

    def new_login(self) -> tuple[str, float]:
        """A fresh single-use login token and when it expires."""
        now = self.clock()
        self._logins = {d: e for d, e in self._logins.items() if e > now}
        while len(self._logins) >= MAX_LOGIN_TOKENS:
            del self._logins[min(self._logins, key=self._logins.__getitem__)]
        token = secrets.token_urlsafe(32)
        expires = now + LOGIN_TTL
        self._logins[_digest(token)] = expires
        return token, expires

    async def redeem(self, token: str) -> tuple[str, float] | None:
        """Swap a login token for a new session (cookie value, expiry); None if the
        token is unknown, used or expired. A token works once, even if it has expired."""
        expires = self._logins.pop(_digest(token), None)
        now = self.clock()
        if expires is None or expires <= now:
            return None
        async with self._lock:
            self._sessions = {d: s for d, s in self._sessions.items() if s.expires > now}
            while len(self._sessions) >= MAX_SESSIONS:
                oldest = min(self._sessions.values(), key=lambda s: s.created)
                del self._sessions[oldest.digest]
            cookie = secrets.token_urlsafe(32)
            session = _Session(digest=_digest(cookie), created=now, expires=now + SESSION_TTL)
            self._sessions[session.digest] = session
            await self._save()
        return cookie, session.expires

    def find(self, cookie: str | None) -> float | None:
        """The expiry of the live session with this cookie, or None."""
        if not cookie:
            return None
        session = self._sessions.get(_digest(cookie))
        if session is None or session.expires <= self.clock():
            return None
        return session.expires

    async def end(self, cookie: str) -> None:
        """Log a session out."""
        async with self._lock:
            if self._sessions.pop(_digest(cookie), None) is not None:
                await self._save()

    @staticmethod
    def csrf_token(cookie: str) -> str:
        """The session's CSRF token: derived from the cookie, and it reveals nothing of it."""
        return hmac.new(cookie.encode(), b"p2pmoments csrf v1", hashlib.sha256).hexdigest()


SESSIONS = web.AppKey("sessions", Sessions)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Asset:
    """One of the app's files as served: as it is and gzipped (each with its own ETag:
    a cache must not answer a request for one with the other)."""

    body: bytes
    media_type: str
    etag: str
    gzipped: bytes | None  # None where gzip would not make it smaller
    gzip_etag: str


@dataclass(slots=True)
class _Assets:
    """The app's files, read and compressed once at start-up, and their version (a hash
    of them all): they are served under /app/VERSION/, so a browser caches them until
    they change."""

    files: dict[str, _Asset]
    version: str = ""


_ASSETS = web.AppKey("web_assets", _Assets)
_BOOT = web.AppKey("boot", str)
_STREAMS = web.AppKey("streams", dict)  # asyncio.Event that ends one -> its session
_CLOSING = web.AppKey("closing", asyncio.Event)
_DECODING = web.AppKey("decoding", asyncio.Semaphore)

PAGES = frozenset({"/", "/login"})


class _Gate(WebGate):
    """What the API's middlewares ask of the web app (see api.WebGate)."""

    def is_public(self, request: web.Request) -> bool:
        # Everything under /app/ is the app's own code: nothing there needs a token.
        return request.method in ("GET", "HEAD") and (
            request.path in PAGES or request.path.startswith("/app/")
        )

    def is_entry(self, request: web.Request) -> bool:
        return request.method in ("GET", "HEAD") and request.path in PAGES

    def session(self, request: web.Request) -> str | None:
        cookie = request.cookies.get(cookie_name(_local_port(request)))
        if cookie is None or request.app[SESSIONS].find(cookie) is None:
            return None
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            # A change: SameSite=Strict is not enough (every port of this host is the
            # same site), so it must come from our own origin and carry our token.
            if request.headers.get("Origin") is None:
                raise ApiError(403, "forbidden_origin", "a change from the web app needs Origin")
            given = request.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(given.encode(), Sessions.csrf_token(cookie).encode()):
                raise ApiError(
                    403, "csrf", f"a change from the web app needs its {CSRF_HEADER} header"
                )
        return cookie


def _session_of(request: web.Request) -> str | None:
    """The session cookie a request was let in with; None if it came with the bearer token."""
    return None if has_bearer(request) else request.app[WEB_GATE].session(request)


def _local_port(request: web.Request) -> int:
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return int(sockname[1]) if sockname else 0


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Every response: the usual security headers, and the sandboxing policy unless its
    handler made it one of the app's own pages (`_page_headers`). Never chosen by the
    Content-Type: a type can come from a peer's data, and a 304 has none."""
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("Content-Security-Policy", SANDBOX_CSP)
    if request.path.startswith(API_PREFIX + "/"):
        response.headers.setdefault("Cache-Control", "no-store")


routes = web.RouteTableDef()


def _page_headers() -> dict[str, str]:
    """What makes an answer one of the app's pages: the page's policy. Every answer for
    a page carries it, a 304 too (a browser merges a 304's headers into the page it
    cached: with the sandboxing policy there, a reload ran no script)."""
    return {"Content-Security-Policy": PAGE_CSP}


def _accepts_gzip(request: web.Request) -> bool:
    """Whether the request's Accept-Encoding allows gzip (RFC 9110 section 12.5.3):
    named, or `*`, with a weight above 0."""
    allowed = {}
    for item in request.headers.get("Accept-Encoding", "").split(","):
        coding, _, params = item.strip().partition(";")
        weight = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        allowed[coding.strip().lower()] = weight
    return allowed.get("gzip", allowed.get("x-gzip", allowed.get("*", 0.0))) > 0


def _file_response(request: web.Request, name: str, cache: str) -> web.Response:
    asset = request.app[_ASSETS].files[name]
    compressed = asset.gzipped is not None and _accepts_gzip(request)
    etag = asset.gzip_etag if compressed else asset.etag
    headers = {"ETag": etag, "Cache-Control": cache, "Vary": "Accept-Encoding"}
    if name == "index.html":
        headers |= _page_headers()
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = asset.media_type
    if compressed and asset.gzipped is not None:
        headers["Content-Encoding"] = "gzip"
        return web.Response(body=asset.gzipped, headers=headers)
    return web.Response(body=asset.body, headers=headers)


@routes.get("/")
async def index(request: web.Request) -> web.Response:
    """The app's page; everything it shows comes from the API after login."""
    return _file_response(request, "index.html", "no-cache")


@routes.get("/app/{version}/{name}")
async def asset(request: web.Request) -> web.Response:
    """One of the app's scripts, styles or images, of this version of the app."""
    assets = request.app[_ASSETS]
    name = request.match_info["name"]
    if request.match_info["version"] != assets.version or name not in assets.files:
        raise ApiError(404, "not_found", "no such file (reload the page for the app's new version)")
    if name == "index.html":
        raise ApiError(404, "not_found", "no such file")
    return _file_response(request, name, "private, max-age=31536000, immutable")


def _message_page(request: web.Request, status: int, title: str, text: str) -> web.Response:
    style = f"/app/{request.app[_ASSETS].version}/style.css"
    body = (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title>"
        f'<link rel="stylesheet" href="{style}">'
        f'<main class="message-page"><h1>{html.escape(title)}</h1>'
        f"<p>{html.escape(text)}</p></main></html>"
    )
    return web.Response(status=status, text=body, content_type="text/html", headers=_page_headers())


@routes.get("/login")
async def login(request: web.Request) -> web.Response:
    """Swap a login link's token for a session cookie, then go to the clean page."""
    token = request.query.get("token", "")
    redeemed = await request.app[SESSIONS].redeem(token) if token else None
    if redeemed is None:
        return _message_page(
            request,
            403,
            "This link has expired",
            "A login link works once, for two minutes. "
            "Run `p2pmoments open` again to open the app.",
        )
    cookie, expires = redeemed
    response = web.HTTPSeeOther("/", headers={"Cache-Control": "no-store"})
    response.set_cookie(
        cookie_name(_local_port(request)),
        cookie,
        max_age=int(expires - request.app[SESSIONS].clock()),
        path="/",
        httponly=True,
        samesite="Strict",
    )
    log.info("web app: a browser logged in")
    raise response


@routes.post(f"{API_PREFIX}/login-links")
async def new_login_link(request: web.Request) -> web.Response:
    """A single-use login link for the web app (bearer token only)."""
    if _session_of(request) is not None:
        raise ApiError(403, "bearer_only", "login links are made with the bearer token only")
    token, expires = request.app[SESSIONS].new_login()
    url = f"http://{request.host}/login?token={token}"
    return web.json_response({"url": url, "expires_at": int(expires)}, status=201)


@routes.get(f"{API_PREFIX}/session")
async def get_session(request: web.Request) -> web.Response:
    """How this request is authenticated, and the CSRF token a page must send."""
    cookie = _session_of(request)
    if cookie is None:
        return web.json_response({"via": "bearer", "csrf_token": None, "expires_at": None})
    expires = request.app[SESSIONS].find(cookie)
    return web.json_response(
        {
            "via": "cookie",
            "csrf_token": Sessions.csrf_token(cookie),
            "expires_at": int(expires or 0),
        }
    )


@routes.delete(f"{API_PREFIX}/session")
async def logout(request: web.Request) -> web.Response:
    """Log this browser out: its cookie stops working at once."""
    cookie = _session_of(request)
    if cookie is None:
        raise ApiError(400, "no_session", "this request has no session to end (bearer token)")
    await request.app[SESSIONS].end(cookie)
    response = web.json_response({"ended": True})
    response.del_cookie(cookie_name(_local_port(request)), path="/")
    return response


def _parse_last_id(text: str, boot: str) -> int | None:
    """The event id to continue after, from a Last-Event-ID like 'BOOT-42'; None if it
    belongs to another run of the daemon (or is nonsense): the client missed events."""
    head, _, tail = text.strip().rpartition("-")
    if head != boot or not tail.isdigit():
        return None
    return int(tail)


def _sse(event: str | None, ident: str, data: dict[str, Any]) -> bytes:
    lines = [] if event is None else [f"event: {event}"]
    lines += [f"id: {ident}", f"data: {json.dumps(data, ensure_ascii=False)}", "", ""]
    return "\n".join(lines).encode()


async def _next(bus: Any, after: int, *stops: asyncio.Event) -> tuple[list[Event], bool] | None:
    """Events after `after` (waiting up to HEARTBEAT), or None once any of `stops` is
    set: the app is closing, the stream ended to make room, or the client went."""
    waiter = asyncio.ensure_future(bus.wait_after(after, HEARTBEAT))
    stoppers = [asyncio.ensure_future(e.wait()) for e in stops]
    try:
        await asyncio.wait({waiter, *stoppers}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (waiter, *stoppers):
            task.cancel()
        await asyncio.gather(waiter, *stoppers, return_exceptions=True)
    if any(e.is_set() for e in stops) or waiter.cancelled():
        return None
    result: tuple[list[Event], bool] = waiter.result()
    return result


@routes.get(f"{API_PREFIX}/events/stream")
async def event_stream(request: web.Request) -> web.StreamResponse:
    """Events as they happen, as Server-Sent Events (text/event-stream)."""
    app = request.app
    streams: dict[asyncio.Event, str] = app[_STREAMS]
    session = _session_of(request) or ""  # "": the bearer token's holders
    ok, end = stream_room(
        list(streams.values()),
        session,
        max_streams=MAX_STREAMS,
        max_per_session=MAX_STREAMS_PER_SESSION,
    )
    if not ok:
        raise ApiError(
            429,
            "too_many_streams",
            f"at most {MAX_STREAMS_PER_SESSION} event streams a session and {MAX_STREAMS} "
            "in all; close a page, or try again later",
            headers={"Retry-After": str(STREAM_RETRY_AFTER)},
        )
    bus = app[NODE].events
    boot = app[_BOOT]
    resume = request.headers.get("Last-Event-ID")
    after_text = request.query.get("after")
    gap = False
    if resume is not None:
        found = _parse_last_id(resume, boot)
        gap = found is None
        after = bus.last_id if found is None else found
    elif after_text is not None:
        if not after_text.isdigit() or len(after_text) > 16:
            raise ApiError(400, "bad_request", "after must be an event id")
        after = int(after_text)
    else:
        after = bus.last_id
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
    )
    if end is not None:
        oldest = list(streams)[end]
        oldest.set()  # it ends; its page reconnects, and is refused if it holds its share
        del streams[oldest]
    ended = asyncio.Event()
    gone = connection_lost(request)  # its slot is free at once, not at the next write
    streams[ended] = session
    try:
        await response.prepare(request)
        await response.write(f"retry: {RETRY_MS}\n\n".encode())
        hello = {"last_id": after, "boot": boot}
        await response.write(_sse("gap" if gap else "hello", f"{boot}-{after}", hello))
        while True:
            answer = await _next(bus, after, app[_CLOSING], ended, gone)
            if answer is None:
                break
            events, missed = answer
            if missed:
                after = events[-1].id if events else bus.last_id
                await response.write(_sse("gap", f"{boot}-{after}", {"last_id": after}))
                continue
            for event in events:
                await response.write(_sse(None, f"{boot}-{event.id}", event.as_json()))
                after = event.id
            if not events:
                await response.write(b": keep-alive\n\n")
    except (ConnectionResetError, ConnectionError):
        pass  # the browser went away
    finally:
        streams.pop(ended, None)
    return response


@routes.get(f"{API_PREFIX}/pairing/code")
async def pairing_code(request: web.Request) -> web.Response:
    """A code to show: its link and its QR code together, so both are the same code
    (separate calls to /pairing/link and /pairing/qr.svg may each make a new one)."""
    link, expires = await request.app[NODE].pairings.new_code()
    svg = await asyncio.to_thread(qr.render_svg, link)
    return web.json_response({"link": link, "expires_at": expires, "svg": svg.decode()})


@routes.post(f"{API_PREFIX}/pairing/decode")
async def decode_code(request: web.Request) -> web.Response:
    """Read pairing codes from an image: a camera frame or a photo of a code."""
    if not request.content_type.startswith("image/"):
        raise ApiError(415, "unsupported_media_type", "send the image itself, as image/*")
    if (request.content_length or 0) > MAX_IMAGE:
        raise ApiError(413, "too_large", f"an image is at most {MAX_IMAGE >> 20} MiB")
    if request.content_length is not None:
        data = await request.read()  # known to be small enough; aiohttp keeps it
    else:
        data = await request.content.read(MAX_IMAGE + 1)  # chunked: never past the limit
    if len(data) > MAX_IMAGE:
        raise ApiError(413, "too_large", f"an image is at most {MAX_IMAGE >> 20} MiB")
    async with request.app[_DECODING]:  # one at a time: a page cannot hog the machine
        try:
            texts = await asyncio.to_thread(qr.decode_image, data)
        except qr.QrDecodeError as exc:
            raise ApiError(400, "not_an_image", str(exc)) from None
    links = [t for t in texts if t.upper().startswith("P2PM:")]
    return web.json_response({"links": links, "codes": len(texts)})


def _read_assets(assets: _Assets) -> None:
    folder = importlib.resources.files("p2pmoments").joinpath("web")
    everything = hashlib.sha256()
    bodies = {}
    for name in ASSETS:
        bodies[name] = folder.joinpath(name).read_bytes()
        everything.update(name.encode() + b"\0" + bodies[name])
    assets.version = everything.hexdigest()[:12]
    # The page names its files under /app/ and the server puts the version in: relative
    # imports between the modules then stay within that version.
    bodies["index.html"] = bodies["index.html"].replace(
        b'"/app/', f'"/app/{assets.version}/'.encode()
    )
    for name, body in bodies.items():
        digest = hashlib.sha256(body).hexdigest()[:16]
        # Compressed once, here (no build step; mtime=0 so the bytes depend on the file only).
        packed = gzip.compress(body, compresslevel=9, mtime=0)
        assets.files[name] = _Asset(
            body=body,
            media_type=MEDIA_TYPES[name[name.rindex(".") :]],
            etag=f'"{digest}"',
            gzipped=packed if len(packed) < len(body) else None,
            gzip_etag=f'"{digest}-gzip"',
        )


async def _web_context(app: web.Application) -> AsyncIterator[None]:
    await asyncio.to_thread(_read_assets, app[_ASSETS])
    await asyncio.to_thread(app[SESSIONS].load)
    yield


async def _on_shutdown(app: web.Application) -> None:
    app[_CLOSING].set()  # event streams end, so stopping never waits for them


def setup(app: web.Application) -> None:
    """Add the web app to the control API application (called by api.create_app)."""
    node = app[NODE]
    app[WEB_GATE] = _Gate()
    app[SESSIONS] = Sessions(node.paths.web_sessions_file)
    app[_ASSETS] = _Assets(files={})
    app[_BOOT] = secrets.token_hex(4)
    app[_STREAMS] = {}
    app[_CLOSING] = asyncio.Event()
    app[_DECODING] = asyncio.Semaphore(1)
    app.add_routes(routes)
    app.cleanup_ctx.append(_web_context)
    app.on_shutdown.append(_on_shutdown)
    app.on_response_prepare.append(_on_prepare)
