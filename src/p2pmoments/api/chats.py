"""The API's endpoints for chats and edits (spec/openapi.yaml: /settings, PATCH
/moments/{id}): whether read receipts go out, and new text for one of our posts."""

from __future__ import annotations

from aiohttp import web

from p2pmoments import views
from p2pmoments.api.base import API_PREFIX, NODE, ApiError, fields, json_body, node_errors
from p2pmoments.receipts import ReadReceipts

__all__ = ["RECEIPTS", "routes"]

RECEIPTS = web.AppKey("receipts", ReadReceipts)

routes = web.RouteTableDef()


async def _settings(receipts: ReadReceipts) -> web.Response:
    return web.json_response({"read_receipts": await receipts.enabled()})


@routes.get(f"{API_PREFIX}/settings")
async def get_settings(request: web.Request) -> web.Response:
    """The person's choices that other people see the effect of."""
    return await _settings(request.app[RECEIPTS])


@routes.patch(f"{API_PREFIX}/settings")
async def patch_settings(request: web.Request) -> web.Response:
    """Change them: `read_receipts` (members of a conversation see what we read)."""
    body = fields(await json_body(request), {"read_receipts": bool})
    if not body:
        raise ApiError(400, "bad_request", 'nothing to change: send {"read_receipts": ...}')
    receipts = request.app[RECEIPTS]
    await receipts.set_enabled(body["read_receipts"])
    return await _settings(receipts)


@routes.patch(f"{API_PREFIX}/moments/{{id}}")
async def edit_moment(request: web.Request) -> web.Response:
    """New text for one of our posts; every member shows it, marked edited."""
    body = fields(await json_body(request), {"text": str}, ("text",))
    node = request.app[NODE]
    with node_errors():
        edit = await node.posting.edit(request.match_info["id"], body["text"])
        view = await node.moments.get(views.moment_text(edit.content.target or b""))
    return web.json_response(views.moment_json(view, node.friends.person))
