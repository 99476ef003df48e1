"""The control API (spec/openapi.yaml): aiohttp, loopback only, bearer token.

Every request passes four checks, outermost first: errors become JSON; the Host
header must name a loopback host (against DNS rebinding); a browser request
must come from our own origin (against CSRF); and all but /health need the token,
or the web app's session cookie (webapp.py), with which a change also needs the
session's CSRF token. Requests so malformed that aiohttp's HTTP parser answers them
itself get the same JSON error body: serve the app with `ApiRunner`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import io
import ipaddress
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import quote

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from p2pmoments import qr
from p2pmoments.core.blobs import BlobKind
from p2pmoments.core.errors import DecodeError
from p2pmoments.core.moment import MAX_BLOBS, MAX_TEXT
from p2pmoments.errors import AmbiguousError, FriendLimitError, NotFoundError, NotOwnerError
from p2pmoments.moments import MAX_FEED, moment_text
from p2pmoments.node import Node

__all__ = [
    "API_PREFIX",
    "NODE",
    "TOKEN",
    "WEB_GATE",
    "ApiRunner",
    "WebGate",
    "create_app",
    "has_bearer",
    "loopback_authority",
]

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
NODE = web.AppKey("node", Node)
TOKEN = web.AppKey("token", str)
UPLOADS = web.AppKey("uploads", asyncio.Semaphore)
MAX_BODY = 64 * 1024  # JSON bodies
# A post with its photos and files, read into memory whole (until uploads are streamed;
# the format itself allows a photo or file of up to core.blobs.MAX_BLOB).
MAX_UPLOAD = 100 * 1024 * 1024
MAX_FIELD = 64 * 1024  # a form field other than a photo or file
READ_CHUNK = 1 << 20
MAX_EXPIRY = 10 * 365 * 86400
MAX_UPLOADS = 2  # multipart posts read and processed at once; others wait their turn
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


def error_body(code: str, message: str) -> str:
    """The JSON body of every error the API answers."""
    return json.dumps({"error": {"code": code, "message": message}})


class ApiError(web.HTTPException):
    """An HTTP error with our JSON body: {"error": {"code", "message"}}."""

    def __init__(self, status: int, code: str, message: str, **kwargs: Any) -> None:
        self.status_code = status
        super().__init__(text=error_body(code, message), content_type="application/json", **kwargs)


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


# RFC 9110 section 7.2 and RFC 3986 section 3.2: host [":" port], where the host is
# `localhost`, a dotted IPv4 address or a bracketed IPv6 one; nothing before or after.
_AUTHORITY = re.compile(
    r"(?:(?P<name>localhost)|(?P<v4>[0-9]{1,3}(?:\.[0-9]{1,3}){3})|\[(?P<v6>[0-9a-f:.]{2,45})\])"
    r"(?::(?P<port>[0-9]{1,5}))?",
    re.ASCII | re.IGNORECASE,
)
_ORIGIN = re.compile(r"http://(?P<authority>[^/?#]*)", re.ASCII | re.IGNORECASE)


def loopback_authority(text: str) -> tuple[str, int | None] | None:
    """(host, port) in canonical form if `text`, a Host header or an origin's authority,
    names this machine's loopback and nothing else; None otherwise."""
    match = _AUTHORITY.fullmatch(text)
    if match is None:
        return None
    port = None if match["port"] is None else int(match["port"])
    if port is not None and not 0 < port < 65536:
        return None
    if match["name"] is not None:
        return "localhost", port
    try:
        address = ipaddress.ip_address(match["v4"] or match["v6"])
    except ValueError:
        return None
    if (address.version == 6) != (match["v6"] is not None) or not address.is_loopback:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return None
    host = str(address) if address.version == 4 else f"[{address.compressed}]"
    return host, port


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
        match = _ORIGIN.fullmatch(origin)
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


def has_bearer(request: web.Request) -> bool:
    """True if the request carries the bearer token."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), request.app[TOKEN].encode()
    )


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refused if a key repeats (parsers disagree on which one wins)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("a key repeats")
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(data: bytes) -> Any:
    """Strict JSON: no NaN or Infinity, no repeated key; ApiError 400 for anything else,
    a number too long or nesting too deep included."""
    try:
        return json.loads(data, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except RecursionError:
        raise ApiError(400, "bad_request", "the JSON body nests too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, a 4,300-digit number
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise ApiError(400, "bad_request", f"the body is not valid JSON: {reason}") from None


async def _json_body(
    request: web.Request, too_large: str = f"a JSON request is at most {MAX_BODY >> 10} KiB"
) -> dict[str, Any]:
    """The request's JSON object; `too_large` says what the size limit means here."""
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    if (request.content_length or 0) > MAX_BODY:
        raise ApiError(413, "too_large", too_large)
    if request.content_length is not None:
        data = await request.read()  # known to be small; aiohttp keeps it for re-reads
    else:
        data = await request.content.read(MAX_BODY + 1)  # chunked: never past the limit
    if len(data) > MAX_BODY:
        raise ApiError(413, "too_large", too_large)
    body = parse_json(data)
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


_INTEGER = re.compile(r"-?[0-9]{1,19}", re.ASCII)
_DECIMAL = re.compile(r"[0-9]{1,10}(?:\.[0-9]{1,9})?", re.ASCII)
INT64 = (-(2**63), 2**63 - 1)  # what SQLite stores


def _integer(
    request: web.Request, name: str, default: int, low: int, high: int, what: str = ""
) -> int:
    """A whole-number query parameter, in plain digits, from `low` to `high`."""
    text = request.query.get(name)
    if text is None:
        return default
    if _INTEGER.fullmatch(text) is None or not low <= int(text) <= high:
        raise ApiError(
            400, "bad_request", f"{name} must be {what or f'a whole number from {low} to {high}'}"
        )
    return int(text)


def _number(request: web.Request, name: str, default: float, low: float, high: float) -> float:
    """A query parameter in plain decimal digits (a fraction allowed), from `low` to `high`."""
    text = request.query.get(name)
    if text is None:
        return default
    if _DECIMAL.fullmatch(text) is None or not low <= float(text) <= high:
        raise ApiError(400, "bad_request", f"{name} must be a number from {low:g} to {high:g}")
    return float(text)


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
    except ValueError as exc:  # whatever else a hostile link makes the decoder raise
        raise ApiError(400, "invalid_link", f"this is not a pairing link ({exc})") from None
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
    after = _integer(request, "after", 0, 0, 2**53)
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


_TYPE_NAMES = {str: "text", int: "a whole number", bool: "true or false", list: "a list"}


def _fields(
    body: dict[str, Any], allowed: dict[str, type], required: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Check a JSON object's fields: known names, required ones present, types exact
    (JSON true is not the number 1 here, nor 1.0 a whole number)."""
    unknown = set(body) - set(allowed)
    if unknown:
        raise ApiError(400, "bad_request", f"unknown field(s): {', '.join(sorted(unknown))}")
    for name in required:
        if name not in body:
            raise ApiError(400, "bad_request", f"{name} is required")
    for name, kind in allowed.items():
        if name in body and type(body[name]) is not kind:
            raise ApiError(400, "bad_request", f"{name} must be {_TYPE_NAMES[kind]}")
        if kind is list and name in body and any(type(x) is not str for x in body[name]):
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
    """Posts, newest first, a page at a time: pass `cursor` = the last page's `next_cursor`
    (or, older and lossy within a second, `before` = its `next_before`)."""
    limit = _integer(request, "limit", 50, 1, MAX_FEED)
    before = (
        _integer(request, "before", 0, *INT64, what="a Unix time, in seconds")
        if "before" in request.query
        else None
    )
    cursor = request.query.get("cursor")
    if cursor is not None and before is not None:
        raise ApiError(400, "bad_request", "give cursor or before, not both")
    with _node_errors():
        page = await request.app[NODE].moments.feed_page(
            request.query.get("circle"), limit, before=before, cursor=cursor
        )
    return web.json_response(
        {
            "moments": page.moments,
            "next_cursor": page.next_cursor,
            "next_before": page.next_before,
        }
    )


@routes.post(f"{API_PREFIX}/moments")
async def post_moment(request: web.Request) -> web.Response:
    """Post to a circle: JSON for text, or multipart/form-data with photos and files."""
    if request.content_type == "multipart/form-data":
        # Uploads are read into memory whole: a few at a time keeps memory bounded.
        async with request.app[UPLOADS]:
            body, photos, files = await _multipart(request)
            return await _post(request, body, ("circle",), photos, files)
    body = await _json_body(
        request,
        too_large=f"this post is over {MAX_BODY >> 10} KiB: a moment's text is at most "
        f"{MAX_TEXT >> 10} KiB; send photos and files as multipart/form-data",
    )
    return await _post(request, body, ("circle", "text"), [], [])


async def _post(
    request: web.Request,
    body: dict[str, Any],
    required: tuple[str, ...],
    photos: list[bytes],
    files: list[tuple[str, bytes, str]],
) -> web.Response:
    _fields(body, {"circle": str, "text": str, "expires_in": int}, required)
    if "expires_in" in body and not 0 < body["expires_in"] <= MAX_EXPIRY:
        raise ApiError(400, "bad_request", "expires_in is a number of seconds, up to 10 years")
    moments = request.app[NODE].moments
    with _node_errors():
        moment = await moments.post(
            body["circle"], body.get("text", ""), body.get("expires_in"), photos=photos, files=files
        )
    return web.json_response(moments.new_post_json(moment), status=201)


async def _read_part(part: BodyPartReader, limit: int, too_large: ApiError) -> bytes:
    """A part's bytes, raising `too_large` as soon as they pass `limit`."""
    data = io.BytesIO()  # getvalue() hands over its buffer: no second copy of a large part
    while chunk := await part.read_chunk(READ_CHUNK):
        data.write(chunk)
        if data.tell() > limit:
            raise too_large
    return data.getvalue()


_EXPIRY_DIGITS = re.compile(r"[0-9]{1,10}", re.ASCII)


async def _multipart(
    request: web.Request,
) -> tuple[dict[str, Any], list[bytes], list[tuple[str, bytes, str]]]:
    """Fields circle, text, expires_in (once each); parts named photo and file (repeatable,
    at most MAX_BLOBS in all). Stops reading as soon as anything is wrong."""
    body: dict[str, Any] = {}
    photos: list[bytes] = []
    files: list[tuple[str, bytes, str]] = []
    total = 0
    too_large = ApiError(
        413, "too_large", f"a post is at most {MAX_UPLOAD >> 20} MiB with its photos and files"
    )
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise ApiError(400, "bad_request", "nested multipart is not accepted")
            name = part.name
            if name in ("photo", "file"):
                if len(photos) + len(files) >= MAX_BLOBS:
                    raise ApiError(
                        400, "bad_request", f"a moment has at most {MAX_BLOBS} photos and files"
                    )
                data = await _read_part(part, MAX_UPLOAD - total, too_large)
                total += len(data)
                if name == "photo":
                    photos.append(data)
                else:
                    media_type = part.headers.get("Content-Type", "application/octet-stream")
                    files.append((part.filename or "file", data, media_type))
            elif name in ("circle", "text", "expires_in"):
                if name in body:
                    raise ApiError(400, "bad_request", f"the {name} field is given twice")
                limit = MAX_TEXT if name == "text" else MAX_FIELD
                data = await _read_part(
                    part,
                    limit,
                    ApiError(400, "bad_request", f"a moment's text is at most {MAX_TEXT >> 10} KiB")
                    if name == "text"
                    else ApiError(400, "bad_request", f"the {name} field is too long"),
                )
                total += len(data)
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError:
                    raise ApiError(
                        400, "bad_request", f"the {name} field is not UTF-8 text"
                    ) from None
                if name != "expires_in":
                    body[name] = text
                elif _EXPIRY_DIGITS.fullmatch(text) is None:
                    raise ApiError(400, "bad_request", "expires_in is a whole number of seconds")
                else:
                    body[name] = int(text)
            else:
                raise ApiError(400, "bad_request", f"unknown part {name!r}")
            if total > MAX_UPLOAD:
                raise too_large
    except HttpProcessingError as exc:  # a malformed part header
        raise ApiError(400, "bad_request", f"the form is malformed: {exc.message}") from None
    except ValueError as exc:  # no boundary, a truncated body
        raise ApiError(400, "bad_request", f"the form is malformed: {exc}") from None
    return body, photos, files


async def _send_blob(request: web.Request, kind: BlobKind, thumbnail: bool) -> web.StreamResponse:
    moments = request.app[NODE].moments
    n_text = request.match_info["n"]
    if _INTEGER.fullmatch(n_text) is None or not 1 <= int(n_text) <= MAX_BLOBS:
        raise ApiError(400, "bad_request", f"photos and files are numbered from 1 to {MAX_BLOBS}")
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


class _JsonErrorHandler(RequestHandler):
    """aiohttp's connection handler, answering what its HTTP parser refuses (no Host, a
    line over 8190 bytes, garbage) with our JSON error body instead of text/plain. Those
    errors come before any middleware (aiohttp issue 3287), so only this can shape them."""

    __slots__ = ()

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
            body = error_body(_STATUS_CODES.get(status, "bad_request"), f"{phrase}: {reason}")
        if request.writer.output_size > 0:  # an answer is under way: only closing is left
            raise ConnectionError("cannot answer with an error after the answer began")
        response = web.Response(status=status, text=body, content_type="application/json")
        response.force_close()
        return response


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        # As web.Server.__call__, with our handler class (no public way to choose it).
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class ApiRunner(web.AppRunner):
    """An AppRunner whose connections answer even unparseable requests in JSON."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _JsonErrorServer  # the same object, made by the app as usual
        return server


def create_app(node: Node, token: str) -> web.Application:
    """The control API application for `node`, guarded by `token`."""
    app = web.Application(
        middlewares=[errors_middleware, host_middleware, origin_middleware, auth_middleware],
        client_max_size=MAX_UPLOAD,
    )
    app[NODE] = node
    app[TOKEN] = token
    app[UPLOADS] = asyncio.Semaphore(MAX_UPLOADS)
    app.add_routes(routes)
    from p2pmoments import webapp  # it builds on this module

    webapp.setup(app)
    return app
