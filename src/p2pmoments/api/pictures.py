"""The API's endpoints about profile pictures (spec/openapi.yaml: /pictures,
/profile/picture, /people/{identity}/picture; spec/identity.md section 5)."""

from __future__ import annotations

from aiohttp import web

from p2pmoments.api.base import (
    API_PREFIX,
    NODE,
    SANDBOX_CSP,
    UPLOADS,
    ApiError,
    node_errors,
)
from p2pmoments.core.errors import DecodeError
from p2pmoments.core.ids import IdKind, decode_id
from p2pmoments.friends import identity_text

__all__ = ["routes"]

routes = web.RouteTableDef()


@routes.get(f"{API_PREFIX}/pictures")
async def list_pictures(request: web.Request) -> web.Response:
    """Whose pictures we hold (ours among them): identity -> digest, for the page to ask
    GET /people/{identity}/picture?v=digest only for those."""
    digests = request.app[NODE].pictures.digests()
    return web.json_response(
        {"pictures": {identity_text(p): d.hex() for p, d in sorted(digests.items())}}
    )


@routes.put(f"{API_PREFIX}/profile/picture")
async def set_picture(request: web.Request) -> web.Response:
    """Our picture: any image the person chose, as the body; made a small square here."""
    node = request.app[NODE]
    async with request.app[UPLOADS]:  # an image is held whole: a few at once
        data = await request.read()  # at most MAX_PHOTO (client_max_size): else 413
        if not data:
            raise ApiError(400, "invalid", "Choose a picture first")
        with node_errors():
            head = await node.pictures.set(data)
    assert head.digest is not None
    return web.json_response({"identity": identity_text(node.person), "digest": head.digest.hex()})


@routes.delete(f"{API_PREFIX}/profile/picture")
async def remove_picture(request: web.Request) -> web.Response:
    """We have no picture any more (friends see our letter again)."""
    node = request.app[NODE]
    await node.pictures.remove()
    return web.json_response({"identity": identity_text(node.person)})


@routes.get(f"{API_PREFIX}/people/{{identity}}/picture")
async def get_picture(request: web.Request) -> web.Response:
    """A person's picture, served only as the JPEG or WebP it was checked to be."""
    try:
        person = decode_id(request.match_info["identity"], IdKind.IDENTITY)
    except DecodeError:
        raise ApiError(400, "invalid", "not an identity") from None
    held = await request.app[NODE].pictures.picture(person)
    if held is None or held[0] not in ("image/jpeg", "image/webp"):
        raise ApiError(404, "not_found", "no picture of this person")
    media_type, data = held
    return web.Response(
        body=data,
        headers={
            "Content-Type": media_type,
            "Content-Disposition": "inline",
            "Cache-Control": "private, max-age=3600",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": SANDBOX_CSP,
        },
    )
