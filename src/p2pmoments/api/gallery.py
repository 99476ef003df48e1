"""The API's endpoints of a circle's photos (spec/openapi.yaml: /circles/{ref}/photos and
/circles/{ref}/photos.zip)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from p2pmoments import views
from p2pmoments.api.base import API_PREFIX, NODE, integer, node_errors
from p2pmoments.gallery import MAX_PHOTO_PAGE, GalleryPhoto, photo_page, zip_photos

__all__ = ["routes"]

routes = web.RouteTableDef()


def _photo_json(photo: GalleryPhoto, people: views.People) -> dict[str, Any]:
    row = photo.view.row
    ref = photo.ref
    return {
        "moment": views.moment_text(row.moment_id),
        "n": photo.n,
        "time": row.created,
        "author": views.person_json(people(row.author)),
        "type": ref.media_type,
        "width": ref.width,
        "height": ref.height,
        "size": ref.size,
        "caption": ref.caption,
        "chunks": ref.total(),
        "chunks_held": photo.held,
    }


@routes.get(f"{API_PREFIX}/circles/{{ref}}/photos")
async def circle_photos(request: web.Request) -> web.Response:
    """A circle's photos, newest first, a page at a time (whole posts)."""
    limit = integer(request, "limit", 200, 1, MAX_PHOTO_PAGE)
    node = request.app[NODE]
    with node_errors():
        page = await photo_page(
            node.moments, request.match_info["ref"], limit, request.query.get("cursor")
        )
    return web.json_response(
        {
            "photos": [_photo_json(p, node.friends.person) for p in page.photos],
            "next_cursor": page.next_cursor,
        }
    )


@routes.get(f"{API_PREFIX}/circles/{{ref}}/photos.zip")
async def circle_photos_zip(request: web.Request) -> web.StreamResponse:
    """Every photo of a circle that is here, as one zip, streamed as it is made."""
    node = request.app[NODE]
    with node_errors():
        circle = node.circles.resolve(request.match_info["ref"])
    name = "photos.zip"
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/zip",
            "Content-Disposition": f'attachment; filename="{name}"',
            "X-Content-Type-Options": "nosniff",
        }
    )
    await response.prepare(request)
    async for data in zip_photos(node.moments, views.circle_text(circle.circle_id)):
        if data:
            await response.write(data)
    await response.write_eof()
    return response
