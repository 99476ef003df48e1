"""The control API (spec/openapi.yaml): aiohttp, loopback only, bearer token.

Every request passes four checks, outermost first: errors become JSON; the Host
header must name a loopback host (against DNS rebinding); a browser request
must come from our own origin (against CSRF); and all but /health need the token,
or the web app's session cookie (webapp.py), with which a change also needs the
session's CSRF token.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Protocol
from urllib.parse import quote

from aiohttp import BodyPartReader, web

from p2pmoments import qr
from p2pmoments.core.blobs import BlobKind
from p2pmoments.core.errors import DecodeError
from p2pmoments.errors import AmbiguousError, FriendLimitError, NotFoundError, NotOwnerError
from p2pmoments.moments import moment_text
from p2pmoments.node import Node

__all__ = ["API_PREFIX", "NODE", "TOKEN", "WEB_GATE", "WebGate", "create_app", "has_bearer"]

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
NODE = web.AppKey("node", Node)
TOKEN = web.AppKey("token", str)
MAX_BODY = 64 * 1024  # JSON bodies
MAX_UPLOAD = 100 * 1024 * 1024  # a post with its photos and files
PUBLIC_PATHS = frozenset({f"{API_PREFIX}/health"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class WebGate(Protocol):
    """What the middlewares ask of the web app (webapp.py), which serves pages here too."""

    def is_public(self, request: web.Request) -> bool:
        """A page or file of the app: no data in it, so no token needed."""

    def is_entry(self, request: web.Request) -> bool:
        """A page a browser may open from anywhere (a link, a bookmark): no origin check."""

    def session(self, request: web.Request) -> str | None:
        """The request's valid session cookie, or None; raises ApiError if it would
        change something without the session's CSRF defence."""


WEB_GATE = web.AppKey("web_gate", WebGate)


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
MAX_WAIT = 60.0


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
    if request.app[WEB_GATE].is_entry(request):
        return await handler(request)
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


def has_bearer(request: web.Request) -> bool:
    """True if the request carries the bearer token."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), request.app[TOKEN].encode()
    )


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    if (request.content_length or 0) > MAX_BODY:
        raise ApiError(413, "too_large", f"a JSON body is at most {MAX_BODY} bytes")
    if request.content_length is not None:
        data = await request.read()  # known to be small; aiohttp keeps it for re-reads
    else:
        data = await request.content.read(MAX_BODY + 1)  # chunked: never past the limit
    if len(data) > MAX_BODY:
        raise ApiError(413, "too_large", f"a JSON body is at most {MAX_BODY} bytes")
    try:
        body = json.loads(data)
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


def _number(request: web.Request, name: str, default: float, low: float, high: float) -> float:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ApiError(400, "bad_request", f"{name} must be a number") from None
    if not low <= value <= high:
        raise ApiError(400, "bad_request", f"{name} must be between {low:g} and {high:g}")
    return value


def _friend_ref(request: web.Request) -> str:
    return request.match_info["ref"]


@contextlib.contextmanager
def _node_errors(invalid: str = "invalid") -> Iterator[None]:
    """Map the node's errors to API errors; `invalid` is the code for bad input."""
    try:
        yield
    except AmbiguousError as exc:
        raise ApiError(409, "ambiguous", str(exc)) from None
    except NotFoundError as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except NotOwnerError as exc:
        raise ApiError(403, "not_owner", str(exc)) from None
    except (DecodeError, ValueError) as exc:
        raise ApiError(400, invalid, str(exc)) from None


@routes.get(f"{API_PREFIX}/pairing/link")
async def pairing_link(request: web.Request) -> web.Response:
    """Our pairing link (a fresh token if none is unused), to show as a QR code."""
    link, expires = await request.app[NODE].pairing_link()
    return web.json_response({"link": link, "expires_at": expires, "qr_version": qr.version(link)})


@routes.get(f"{API_PREFIX}/pairing/qr.svg")
async def pairing_qr_svg(request: web.Request) -> web.Response:
    """Our pairing QR code as SVG."""
    link, _ = await request.app[NODE].pairing_link()
    return web.Response(
        body=qr.render_svg(link),
        content_type="image/svg+xml",
        headers={"Cache-Control": "no-store"},
    )


@routes.get(f"{API_PREFIX}/pairing/qr.png")
async def pairing_qr_png(request: web.Request) -> web.Response:
    """Our pairing QR code as PNG."""
    link, _ = await request.app[NODE].pairing_link()
    return web.Response(
        body=qr.render_png(link), content_type="image/png", headers={"Cache-Control": "no-store"}
    )


@routes.get(f"{API_PREFIX}/friends")
async def list_friends(request: web.Request) -> web.Response:
    """Friends, blocked identities, and recent pairing attempts."""
    node = request.app[NODE]
    return web.json_response(
        {
            "friends": [node.friend_json(f) for f in node.friends()],
            "pairings": [node.pairing_json(p) for p in await node.pairings()],
        }
    )


@routes.post(f"{API_PREFIX}/friends")
async def add_friend(request: web.Request) -> web.Response:
    """Pair with the owner of a scanned link; waits up to `wait` seconds for the outcome."""
    body = await _json_body(request)
    unknown = set(body) - {"link", "wait"}
    if unknown:
        raise ApiError(400, "bad_request", f"unknown field(s): {', '.join(sorted(unknown))}")
    link, wait = body.get("link"), body.get("wait", 0)
    if not isinstance(link, str):
        raise ApiError(400, "bad_request", 'send {"link": "P2PM:..."}')
    if type(wait) not in (int, float) or not 0 <= wait <= MAX_WAIT:
        raise ApiError(400, "bad_request", f"wait must be a number of seconds up to {MAX_WAIT:g}")
    node = request.app[NODE]
    try:
        record = await node.pair(link)
    except DecodeError as exc:
        raise ApiError(400, "invalid_link", str(exc)) from None
    except FriendLimitError as exc:
        raise ApiError(409, "friend_limit", str(exc)) from None
    if wait:
        record = await node.wait_pairing(record.id, float(wait)) or record
    status = 200 if record.state == "confirmed" else 202
    return web.json_response({"pairing": node.pairing_json(record)}, status=status)


@routes.get(f"{API_PREFIX}/friends/{{ref}}")
async def get_friend(request: web.Request) -> web.Response:
    """One friend, by identity, identity prefix or name."""
    node = request.app[NODE]
    with _node_errors("invalid_name"):
        friend = node.resolve_friend(_friend_ref(request))
    return web.json_response(node.friend_json(friend))


@routes.patch(f"{API_PREFIX}/friends/{{ref}}")
async def rename_friend(request: web.Request) -> web.Response:
    """Change what we call a friend."""
    body = await _json_body(request)
    if set(body) != {"name"}:
        raise ApiError(400, "bad_request", 'send {"name": ...}')
    node = request.app[NODE]
    with _node_errors("invalid_name"):
        friend = await node.rename_friend(_friend_ref(request), body["name"])
    return web.json_response(node.friend_json(friend))


@routes.delete(f"{API_PREFIX}/friends/{{ref}}")
async def remove_friend(request: web.Request) -> web.Response:
    """Forget a friend and drop any link to them."""
    node = request.app[NODE]
    with _node_errors("invalid_name"):
        friend = await node.remove_friend(_friend_ref(request))
    return web.json_response({"removed": node.friend_json(friend)})


@routes.post(f"{API_PREFIX}/friends/{{ref}}/block")
async def block_friend(request: web.Request) -> web.Response:
    """Refuse every link from this identity until unblocked."""
    node = request.app[NODE]
    with _node_errors("invalid_name"):
        friend = await node.set_blocked(_friend_ref(request), blocked=True)
    return web.json_response(node.friend_json(friend))


@routes.post(f"{API_PREFIX}/friends/{{ref}}/unblock")
async def unblock_friend(request: web.Request) -> web.Response:
    """Accept links from this identity again."""
    node = request.app[NODE]
    with _node_errors("invalid_name"):
        friend = await node.set_blocked(_friend_ref(request), blocked=False)
    return web.json_response(node.friend_json(friend))


@routes.get(f"{API_PREFIX}/peers")
async def peers(request: web.Request) -> web.Response:
    """Who is connected, since when, found how, bytes each way."""
    return web.json_response({"peers": request.app[NODE].peers_json()})


@routes.get(f"{API_PREFIX}/events")
async def events(request: web.Request) -> web.Response:
    """Events after `after`, waiting up to `timeout` seconds for one (long poll)."""
    after = int(_number(request, "after", 0, 0, 2**53))
    timeout = _number(request, "timeout", 0, 0, MAX_WAIT)
    bus = request.app[NODE].events
    found, gap = await bus.wait_after(after, timeout)
    return web.json_response(
        {
            "events": [e.as_json() for e in found],
            "last_id": found[-1].id
            if found
            else max(after, 0)
            if after <= bus.last_id
            else bus.last_id,
            "gap": gap,
        }
    )


def _fields(
    body: dict[str, Any],
    allowed: dict[str, type | tuple[type, ...]],
    required: tuple[str, ...] = (),
) -> dict[str, Any]:
    unknown = set(body) - set(allowed)
    if unknown:
        raise ApiError(400, "bad_request", f"unknown field(s): {', '.join(sorted(unknown))}")
    for name in required:
        if name not in body:
            raise ApiError(400, "bad_request", f"{name} is required")
    for name, kind in allowed.items():
        if name in body and not isinstance(body[name], kind):
            raise ApiError(400, "bad_request", f"{name} has the wrong type")
        if (
            name in body
            and isinstance(body[name], list)
            and not all(isinstance(x, str) for x in body[name])
        ):
            raise ApiError(400, "bad_request", f"{name} must be a list of names or identities")
    return body


@routes.get(f"{API_PREFIX}/circles")
async def list_circles(request: web.Request) -> web.Response:
    """The circles we own or belong to."""
    moments = request.app[NODE].moments
    return web.json_response({"circles": [moments.circle_json(m) for m in moments.circles()]})


@routes.post(f"{API_PREFIX}/circles")
async def create_circle(request: web.Request) -> web.Response:
    """A new circle of some of our friends."""
    body = _fields(
        await _json_body(request),
        {"name": str, "members": list, "members_can_post": bool},
        ("name",),
    )
    moments = request.app[NODE].moments
    with _node_errors():
        manifest = await moments.create_circle(
            body["name"], body.get("members", []), body.get("members_can_post", False)
        )
    return web.json_response(moments.circle_json(manifest), status=201)


@routes.get(f"{API_PREFIX}/circles/{{ref}}")
async def get_circle(request: web.Request) -> web.Response:
    """One circle, by name or id."""
    moments = request.app[NODE].moments
    with _node_errors():
        manifest = moments.resolve_circle(request.match_info["ref"])
    return web.json_response(moments.circle_json(manifest))


@routes.patch(f"{API_PREFIX}/circles/{{ref}}")
async def change_circle(request: web.Request) -> web.Response:
    """Rename, change who may post, add or remove members: a new epoch, a new key."""
    body = _fields(
        await _json_body(request),
        {"name": str, "members_can_post": bool, "add": list, "remove": list},
    )
    if not body:
        raise ApiError(400, "bad_request", "nothing to change")
    moments = request.app[NODE].moments
    with _node_errors():
        manifest = await moments.change_circle(
            request.match_info["ref"],
            add=body.get("add", []),
            remove=body.get("remove", []),
            name=body.get("name"),
            members_can_post=body.get("members_can_post"),
        )
    return web.json_response(moments.circle_json(manifest))


@routes.delete(f"{API_PREFIX}/circles/{{ref}}")
async def delete_circle(request: web.Request) -> web.Response:
    """Forget a circle and its moments on this daemon."""
    moments = request.app[NODE].moments
    with _node_errors():
        manifest = await moments.delete_circle(request.match_info["ref"])
    return web.json_response({"deleted": moments.circle_json(manifest)})


@routes.get(f"{API_PREFIX}/moments")
async def feed(request: web.Request) -> web.Response:
    """Posts, newest first, a page at a time: pass `before` = the last page's `next_before`."""
    limit = int(_number(request, "limit", 50, 1, 200))
    before = request.query.get("before")
    if before is not None and not before.isdigit():
        raise ApiError(400, "bad_request", "before must be a Unix time")
    with _node_errors():
        items = await request.app[NODE].moments.feed(
            request.query.get("circle"), int(before) if before else None, limit
        )
    return web.json_response(
        {
            "moments": items,
            "next_before": items[-1]["time"] if len(items) == limit else None,
        }
    )


@routes.post(f"{API_PREFIX}/moments")
async def post_moment(request: web.Request) -> web.Response:
    """Post to a circle: JSON for text, or multipart/form-data with photos and files."""
    if request.content_type == "multipart/form-data":
        body, photos, files = await _multipart(request)
        required: tuple[str, ...] = ("circle",)
    else:
        body, photos, files = await _json_body(request), [], []
        required = ("circle", "text")  # with JSON there can be nothing else to post
    _fields(body, {"circle": str, "text": str, "expires_in": int}, required)
    if "expires_in" in body and not 0 < body["expires_in"] <= 10 * 365 * 86400:
        raise ApiError(400, "bad_request", "expires_in is a number of seconds, up to 10 years")
    moments = request.app[NODE].moments
    with _node_errors():
        moment = await moments.post(
            body["circle"], body.get("text", ""), body.get("expires_in"), photos=photos, files=files
        )
        item = await moments.get(moment_text(moment.id))
    return web.json_response(item, status=201)


async def _multipart(
    request: web.Request,
) -> tuple[dict[str, Any], list[bytes], list[tuple[str, bytes, str]]]:
    """Fields circle, text, expires_in; parts named photo and file (repeatable)."""
    body: dict[str, Any] = {}
    photos: list[bytes] = []
    files: list[tuple[str, bytes, str]] = []
    total = 0
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise ApiError(400, "bad_request", "nested multipart is not accepted")
        data = await part.read()
        total += len(data)
        if total > MAX_UPLOAD:
            raise ApiError(413, "too_large", f"a post is at most {MAX_UPLOAD >> 20} MiB in all")
        if part.name == "photo":
            photos.append(bytes(data))
        elif part.name == "file":
            media_type = part.headers.get("Content-Type", "application/octet-stream")
            files.append((part.filename or "file", bytes(data), media_type))
        elif part.name in ("circle", "text"):
            body[part.name] = data.decode("utf-8", errors="strict")
        elif part.name == "expires_in":
            if not data.isdigit():
                raise ApiError(400, "bad_request", "expires_in is a number of seconds")
            body["expires_in"] = int(data)
        else:
            raise ApiError(400, "bad_request", f"unknown part {part.name!r}")
    return body, photos, files


async def _send_blob(request: web.Request, kind: BlobKind, thumbnail: bool) -> web.StreamResponse:
    moments = request.app[NODE].moments
    n_text = request.match_info["n"]
    if not n_text.isdigit():
        raise ApiError(400, "bad_request", "photos and files are numbered from 1")
    with _node_errors():
        ref = await moments.blob(request.match_info["id"], kind, int(n_text), thumbnail)
        await asyncio.to_thread(moments.check_chunks, ref)  # errors stay JSON until here
    response = web.StreamResponse(
        headers={"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"}
    )
    response.content_type = ref.media_type
    response.content_length = ref.size
    if kind is BlobKind.FILE:
        response.headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(ref.name)}"
    await response.prepare(request)
    for index in range(len(ref.chunks)):
        await response.write(await asyncio.to_thread(moments.read_chunk, ref, index))
    await response.write_eof()
    return response


@routes.get(f"{API_PREFIX}/moments/{{id}}/photos/{{n}}")
async def get_photo(request: web.Request) -> web.StreamResponse:
    """The n-th photo of a moment (from 1), as posted (location removed)."""
    return await _send_blob(request, BlobKind.PHOTO, thumbnail=False)


@routes.get(f"{API_PREFIX}/moments/{{id}}/photos/{{n}}/thumbnail")
async def get_thumbnail(request: web.Request) -> web.StreamResponse:
    """The n-th photo's thumbnail: a JPEG at most 320 pixels on its longer side."""
    return await _send_blob(request, BlobKind.PHOTO, thumbnail=True)


@routes.get(f"{API_PREFIX}/moments/{{id}}/files/{{n}}")
async def get_file(request: web.Request) -> web.StreamResponse:
    """The n-th file of a moment (from 1)."""
    return await _send_blob(request, BlobKind.FILE, thumbnail=False)


@routes.get(f"{API_PREFIX}/moments/{{id}}")
async def get_moment(request: web.Request) -> web.Response:
    """One post with its comments and reactions."""
    with _node_errors():
        item = await request.app[NODE].moments.get(request.match_info["id"])
    return web.json_response(item)


@routes.delete(f"{API_PREFIX}/moments/{{id}}")
async def retract_moment(request: web.Request) -> web.Response:
    """Retract one of our moments: its content is deleted everywhere, a marker stays."""
    with _node_errors():
        target = await request.app[NODE].moments.retract(request.match_info["id"])
    return web.json_response({"retracted": moment_text(target)})


@routes.post(f"{API_PREFIX}/moments/{{id}}/comments")
async def comment(request: web.Request) -> web.Response:
    """Comment on a moment; answers with the moment and its comments."""
    body = _fields(await _json_body(request), {"text": str}, ("text",))
    moments = request.app[NODE].moments
    with _node_errors():
        answer = await moments.comment(request.match_info["id"], body["text"])
        item = await moments.get(moment_text(answer.content.reply_to or b""))
    return web.json_response(item, status=201)


@routes.post(f"{API_PREFIX}/moments/{{id}}/reactions")
async def react(request: web.Request) -> web.Response:
    """React to a moment with an emoji; answers with the moment and its reactions."""
    body = _fields(await _json_body(request), {"emoji": str}, ("emoji",))
    moments = request.app[NODE].moments
    with _node_errors():
        answer = await moments.react(request.match_info["id"], body["emoji"])
        item = await moments.get(moment_text(answer.content.reply_to or b""))
    return web.json_response(item, status=201)


def create_app(node: Node, token: str) -> web.Application:
    """The control API application for `node`, guarded by `token`."""
    app = web.Application(
        middlewares=[errors_middleware, host_middleware, origin_middleware, auth_middleware],
        client_max_size=MAX_UPLOAD,
    )
    app[NODE] = node
    app[TOKEN] = token
    app.add_routes(routes)
    from p2pmoments import webapp  # it builds on this module

    webapp.setup(app)
    return app
