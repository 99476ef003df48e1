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

The web app is in three modules: websessions.py (sessions, login links, CSRF, the gate
the API asks), webevents.py (the event stream) and here: the pages and the app's files,
the headers every response carries, reading codes from images, and `setup`.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import html
import importlib.resources
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from p2pmoments import qr, webemoji
from p2pmoments.api.base import API_PREFIX, NODE, SANDBOX_CSP, WEB_GATE, ApiError
from p2pmoments.webevents import _BOOT, _CLOSING, _STREAMS
from p2pmoments.webevents import routes as event_routes
from p2pmoments.websessions import (
    CSRF_HEADER,
    LOGIN_TTL,
    SESSION_TTL,
    SESSIONS,
    Sessions,
    _Gate,
    _local_port,
    cookie_name,
)
from p2pmoments.websessions import routes as session_routes

__all__ = [
    "ASSETS",
    "CSRF_HEADER",
    "LOGIN_TTL",
    "SESSIONS",
    "SESSION_TTL",
    "Sessions",
    "cookie_name",
    "setup",
]

log = logging.getLogger(__name__)

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
    "versions.js",
    "notes.js",
    "notify.js",
    "settings.js",
    "gallery.js",
    "video.js",
    "emoji.js",
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
_DECODING = web.AppKey("decoding", asyncio.Semaphore)


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
    app.add_routes(session_routes)
    app.add_routes(event_routes)
    webemoji.setup(app)
    app.cleanup_ctx.append(_web_context)
    app.on_shutdown.append(_on_shutdown)
    app.on_response_prepare.append(_on_prepare)
