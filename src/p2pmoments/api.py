"""The control API (spec/openapi.yaml): aiohttp, loopback only, bearer token.

Every request passes four checks, outermost first: errors become JSON; the Host
header must name a loopback host (against DNS rebinding); a browser request
must come from our own origin (against CSRF); and all but /health need the token.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from p2pmoments.core.errors import DecodeError
from p2pmoments.node import Node

__all__ = ["API_PREFIX", "NODE", "TOKEN", "create_app"]

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
NODE = web.AppKey("node", Node)
TOKEN = web.AppKey("token", str)
MAX_BODY = 64 * 1024
PUBLIC_PATHS = frozenset({f"{API_PREFIX}/health"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(web.HTTPException):
    """An HTTP error with our JSON body: {"error": {"code", "message"}}."""

    def __init__(self, status: int, code: str, message: str, **kwargs: Any) -> None:
        self.status_code = status
        super().__init__(
            text=json.dumps({"error": {"code": code, "message": message}}),
            content_type="application/json",
            **kwargs,
        )


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}


def _is_loopback_host(host: str) -> bool:
    """True if a Host header (or Origin authority) names this machine's loopback."""
    if host.startswith("["):
        name = host[1:].partition("]")[0]
    else:
        name = host.rpartition(":")[0] if host.count(":") == 1 else host
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


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
        code = _STATUS_CODES.get(exc.status, "error")
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
    if not _is_loopback_host(host):
        raise ApiError(403, "forbidden_host", f"Host {host!r} is not a loopback name or address")
    return await handler(request)


@web.middleware
async def origin_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse browser requests made by pages of any other origin (CSRF)."""
    origin = request.headers.get("Origin")
    if origin is not None:
        expected = f"http://{request.headers.get('Host', '')}"
        if origin.lower() != expected.lower():
            raise ApiError(403, "forbidden_origin", f"requests from {origin!r} are not allowed")
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        raise ApiError(403, "forbidden_origin", f"{fetch_site} requests are not allowed")
    return await handler(request)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Demand the bearer token everywhere but /health."""
    if request.path not in PUBLIC_PATHS:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        token = request.app[TOKEN]
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            raise ApiError(
                401,
                "unauthorized",
                "a bearer token is needed: Authorization: Bearer <contents of the token file>",
                headers={"WWW-Authenticate": 'Bearer realm="p2pmoments"'},
            )
    return await handler(request)


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "bad_request", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    return body


routes = web.RouteTableDef()


@routes.get(f"{API_PREFIX}/health")
async def health(request: web.Request) -> web.Response:
    """Liveness only: no data."""
    return web.json_response({"status": "ok"})


@routes.get(f"{API_PREFIX}/status")
async def status(request: web.Request) -> web.Response:
    """What `p2pmoments status --json` prints."""
    return web.json_response(await request.app[NODE].status())


@routes.get(f"{API_PREFIX}/profile")
async def get_profile(request: web.Request) -> web.Response:
    """Our name and identity."""
    profile = await request.app[NODE].profile()
    return web.json_response({"name": profile.name, "identity": profile.identity})


@routes.patch(f"{API_PREFIX}/profile")
async def patch_profile(request: web.Request) -> web.Response:
    """Change our display name; answers once it is on disk."""
    body = await _json_body(request)
    unknown = set(body) - {"name"}
    if unknown:
        raise ApiError(400, "bad_request", f"unknown field(s): {', '.join(sorted(unknown))}")
    if "name" not in body:
        raise ApiError(400, "bad_request", 'nothing to change: send {"name": ...}')
    try:
        profile = await request.app[NODE].set_name(body["name"])
    except DecodeError as exc:
        raise ApiError(400, "invalid_name", str(exc)) from None
    return web.json_response({"name": profile.name, "identity": profile.identity})


def create_app(node: Node, token: str) -> web.Application:
    """The control API application for `node`, guarded by `token`."""
    app = web.Application(
        middlewares=[errors_middleware, host_middleware, origin_middleware, auth_middleware],
        client_max_size=MAX_BODY,
    )
    app[NODE] = node
    app[TOKEN] = token
    app.add_routes(routes)
    return app
