"""The API's endpoints about what the person has read (spec/openapi.yaml: /unread,
/circles/{ref}/read)."""

from __future__ import annotations

from aiohttp import web

from p2pmoments import views
from p2pmoments.api.base import API_PREFIX, READING, fields, json_body, node_errors

__all__ = ["routes"]

routes = web.RouteTableDef()


@routes.get(f"{API_PREFIX}/unread")
async def unread(request: web.Request) -> web.Response:
    """How many posts in each circle the person has not seen, and where each mark is."""
    return web.json_response(views.unread_json(await request.app[READING].counts()))


@routes.post(f"{API_PREFIX}/circles/{{ref}}/read")
async def mark_read(request: web.Request) -> web.Response:
    """The person has seen a circle up to a post (none given: up to its newest)."""
    body = fields(await json_body(request), {"moment": str})
    reading = request.app[READING]
    with node_errors():
        await reading.mark(request.match_info["ref"], body.get("moment"))
    return web.json_response(views.unread_json(await reading.counts()))
