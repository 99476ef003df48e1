"""The reaction emoji as pictures (Twemoji, CC-BY 4.0: emoji/LICENSE.md), for systems
without an emoji font: served at /app/{version}/emoji/{code}.svg, beside the app's
files, read once at start-up. Only these six exist; the page draws any other emoji as
text."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.resources
from collections.abc import AsyncIterator

from aiohttp import web

from p2pmoments.api.base import ApiError

__all__ = ["EMOJI", "setup"]

# The reactions the app offers (web/feed.js REACTIONS), by code point(s) as named in files.
EMOJI = ("2764", "1f602", "1f389", "1f44d", "1f62e", "1f622")

_FILES = web.AppKey("emoji_files", dict)

routes = web.RouteTableDef()


@routes.get("/app/{version}/emoji/{name}")
async def emoji(request: web.Request) -> web.Response:
    """One reaction emoji as SVG (any version: they never change)."""
    found = request.app[_FILES].get(request.match_info["name"])
    if found is None:
        raise ApiError(404, "not_found", "no such emoji picture")
    body, etag = found
    headers = {"ETag": etag, "Cache-Control": "private, max-age=31536000, immutable"}
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type="image/svg+xml", headers=headers)


def _read() -> dict[str, tuple[bytes, str]]:
    folder = importlib.resources.files("p2pmoments").joinpath("emoji")
    out = {}
    for code in EMOJI:
        body = folder.joinpath(f"{code}.svg").read_bytes()
        out[f"{code}.svg"] = (body, f'"{hashlib.sha256(body).hexdigest()[:16]}"')
    return out


async def _load(app: web.Application) -> AsyncIterator[None]:
    app[_FILES].update(await asyncio.to_thread(_read))
    yield


def setup(app: web.Application) -> None:
    """Serve the emoji pictures (called by webapp.setup)."""
    app[_FILES] = {}
    app.add_routes(routes)
    app.cleanup_ctx.append(_load)
