"""The web app's sessions (spec/openapi.yaml, "The web app and its sessions"): login
tokens swapped for sessions, sessions kept hashed in a 0600 file, the CSRF token, the
gate the API's middlewares ask who a request is, and the session API (login links,
GET and DELETE /session). Swapping a token at /login is webapp.py's.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from p2pmoments.api.base import API_PREFIX, WEB_GATE, ApiError, WebGate, has_bearer
from p2pmoments.files import write_file_atomically

__all__ = [
    "CSRF_HEADER",
    "LOGIN_TTL",
    "SESSIONS",
    "SESSION_TTL",
    "Sessions",
    "cookie_name",
]

log = logging.getLogger(__name__)

LOGIN_TTL = 120.0  # seconds a login link works, once
SESSION_TTL = 30 * 86400.0  # seconds a session lasts from login
MAX_SESSIONS = 32  # the oldest goes first
MAX_LOGIN_TOKENS = 16
CSRF_HEADER = "X-CSRF-Token"


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


routes = web.RouteTableDef()


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
