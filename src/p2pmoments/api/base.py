"""What the API's parts share: its keys and limits, the JSON error and the table that
maps every part's errors to a status and a code, and the checks of what comes in
(strict JSON, exact types, numbers in range)."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from p2pmoments.errors import (
    AmbiguousError,
    DiskFullError,
    FriendLimitError,
    NotFoundError,
    NotOwnerError,
    TooLargeError,
    UserInputError,
)
from p2pmoments.node import Node
from p2pmoments.reading import Reading

if TYPE_CHECKING:
    pass

__all__ = [
    "API_PREFIX",
    "ERRORS",
    "NODE",
    "SANDBOX_CSP",
    "TOKEN",
    "WEB_GATE",
    "ApiError",
    "WebGate",
    "error_body",
    "has_bearer",
    "json_body",
    "loopback_authority",
    "node_errors",
]

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
# The policy of every answer that is not one of the web app's pages: nothing in it runs.
SANDBOX_CSP = "default-src 'none'; frame-ancestors 'none'; sandbox"


NODE = web.AppKey("node", Node)


TOKEN = web.AppKey("token", str)


UPLOADS = web.AppKey("uploads", asyncio.Semaphore)


READING = web.AppKey("reading", Reading)


MAX_BODY = 64 * 1024  # JSON bodies


# A photo is read into memory whole (to strip its location and make its thumbnail); a
# file is streamed, up to core.blobs.MAX_BLOB.
MAX_PHOTO = 100 * 1024 * 1024


MAX_FIELD = 64 * 1024  # a form field other than a photo or file


READ_CHUNK = 1 << 20


MAX_EXPIRY = 10 * 365 * 86400


MAX_UPLOADS = 2  # multipart posts read at once (a photo is held whole); others wait their turn


MAX_WAIT = 60.0


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


STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}


# Every error a part raises about what a user asked for, with its status and code (the
# first entry that matches wins; bad input takes the code its route gives).
ERRORS: tuple[tuple[type[Exception], int, str], ...] = (
    (AmbiguousError, 409, "ambiguous"),
    (NotFoundError, 404, "not_found"),
    (NotOwnerError, 403, "not_owner"),
    (FriendLimitError, 409, "friend_limit"),
    (TooLargeError, 413, "too_large"),
    (UserInputError, 400, "invalid"),
    # RFC 4918 section 11.5, Insufficient Storage: nothing was stored; the message
    # names the file system to free space on, and the same request then succeeds.
    (DiskFullError, 507, "disk_full"),
)


@contextlib.contextmanager
def node_errors(invalid: str = "invalid") -> Iterator[None]:
    """Map the parts' errors to API errors by ERRORS; `invalid` is the code for bad input
    on this route."""
    try:
        yield
    except tuple(kind for kind, _, _ in ERRORS) as exc:
        status, code = next((s, c) for kind, s, c in ERRORS if isinstance(exc, kind))
        raise ApiError(status, invalid if code == "invalid" else code, str(exc)) from None


# RFC 9110 section 7.2 and RFC 3986 section 3.2: host [":" port], where the host is
# `localhost`, a dotted IPv4 address or a bracketed IPv6 one; nothing before or after.
_AUTHORITY = re.compile(
    r"(?:(?P<name>localhost)|(?P<v4>[0-9]{1,3}(?:\.[0-9]{1,3}){3})|\[(?P<v6>[0-9a-f:.]{2,45})\])"
    r"(?::(?P<port>[0-9]{1,5}))?",
    re.ASCII | re.IGNORECASE,
)


ORIGIN = re.compile(r"http://(?P<authority>[^/?#]*)", re.ASCII | re.IGNORECASE)


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
        parsed = json.loads(data, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
        # A lone surrogate ("\\ud800") is valid JSON but no text: refused here, once,
        # rather than where it is first encoded (a 500 in four places before).
        json.dumps(parsed, ensure_ascii=False).encode("utf-8")
        return parsed
    except UnicodeEncodeError:
        raise ApiError(
            400, "bad_request", "the body's text holds a lone UTF-16 surrogate (\\ud800-\\udfff)"
        ) from None
    except RecursionError:
        raise ApiError(400, "bad_request", "the JSON body nests too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, a 4,300-digit number
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise ApiError(400, "bad_request", f"the body is not valid JSON: {reason}") from None


async def json_body(
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


INTEGER = re.compile(r"-?[0-9]{1,19}", re.ASCII)


DECIMAL = re.compile(r"[0-9]{1,10}(?:\.[0-9]{1,9})?", re.ASCII)


INT64 = (-(2**63), 2**63 - 1)  # what SQLite stores


def integer(
    request: web.Request, name: str, default: int, low: int, high: int, what: str = ""
) -> int:
    """A whole-number query parameter, in plain digits, from `low` to `high`."""
    text = request.query.get(name)
    if text is None:
        return default
    if INTEGER.fullmatch(text) is None or not low <= int(text) <= high:
        raise ApiError(
            400, "bad_request", f"{name} must be {what or f'a whole number from {low} to {high}'}"
        )
    return int(text)


def number(request: web.Request, name: str, default: float, low: float, high: float) -> float:
    """A query parameter in plain decimal digits (a fraction allowed), from `low` to `high`."""
    text = request.query.get(name)
    if text is None:
        return default
    if DECIMAL.fullmatch(text) is None or not low <= float(text) <= high:
        raise ApiError(400, "bad_request", f"{name} must be a number from {low:g} to {high:g}")
    return float(text)


_TYPE_NAMES = {str: "text", int: "a whole number", bool: "true or false", list: "a list"}


def fields(
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
