"""The API's endpoints (spec/openapi.yaml): each asks the daemon's parts and answers
with views.py's JSON.

Why so long: the endpoints of moments (the feed, one moment, its photos and files in
byte ranges, comments, reactions, edits, retractions) share their lookups and the
headers a co-member's bytes are served with; newer groups have modules of their own
(devices, notes, versions, gallery, chats, unread).
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from aiohttp import web

from p2pmoments import qr, views
from p2pmoments.api.base import (
    API_PREFIX,
    INT64,
    INTEGER,
    MAX_BODY,
    MAX_EXPIRY,
    MAX_WAIT,
    NODE,
    SANDBOX_CSP,
    UPLOADS,
    ApiError,
    fields,
    integer,
    json_body,
    node_errors,
    number,
)
from p2pmoments.api.ranges import ByteRange, RangeNotSatisfiable, parse_range
from p2pmoments.api.uploads import multipart
from p2pmoments.core.blobs import PHOTO_TYPES, VIDEO_TYPES, BlobKind, BlobRef
from p2pmoments.core.moment import MAX_BLOBS, MAX_TEXT
from p2pmoments.core.pairing import PairingState
from p2pmoments.moments import MAX_FEED
from p2pmoments.posting import Upload
from p2pmoments.store import StoredMoment

__all__ = ["routes"]

DOWNLOAD_BATCH = 4 << 20  # plaintext read and decrypted off the loop at once

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
    body = await json_body(request)
    unknown = set(body) - {"name"}
    if unknown:
        raise ApiError(400, "bad_request", f"unknown field(s): {', '.join(sorted(unknown))}")
    if "name" not in body:
        raise ApiError(400, "bad_request", 'nothing to change: send {"name": ...}')
    with node_errors("invalid_name"):
        profile = await request.app[NODE].set_name(body["name"])
    return web.json_response({"name": profile.name, "identity": profile.identity})


def _friend_ref(request: web.Request) -> str:
    return request.match_info["ref"]


@routes.get(f"{API_PREFIX}/pairing/link")
async def pairing_link(request: web.Request) -> web.Response:
    """Our pairing link (a fresh token if none is unused), to show as a QR code."""
    link, expires = await request.app[NODE].pairings.new_code()
    return web.json_response({"link": link, "expires_at": expires, "qr_version": qr.version(link)})


@routes.get(f"{API_PREFIX}/pairing/qr.svg")
async def pairing_qr_svg(request: web.Request) -> web.Response:
    """Our pairing QR code as SVG."""
    link, _ = await request.app[NODE].pairings.new_code()
    return web.Response(
        body=qr.render_svg(link),
        content_type="image/svg+xml",
        headers={"Cache-Control": "no-store"},
    )


@routes.get(f"{API_PREFIX}/pairing/qr.png")
async def pairing_qr_png(request: web.Request) -> web.Response:
    """Our pairing QR code as PNG."""
    link, _ = await request.app[NODE].pairings.new_code()
    return web.Response(
        body=qr.render_png(link), content_type="image/png", headers={"Cache-Control": "no-store"}
    )


@routes.get(f"{API_PREFIX}/friends")
async def list_friends(request: web.Request) -> web.Response:
    """Friends, blocked identities, and recent pairing attempts."""
    node = request.app[NODE]
    return web.json_response(
        {
            "friends": [node.friend_json(f) for f in node.friends.all()],
            "pairings": [views.pairing_json(p) for p in await node.pairings.records()],
        }
    )


@routes.post(f"{API_PREFIX}/friends")
async def add_friend(request: web.Request) -> web.Response:
    """Pair with the owner of a scanned link; waits up to `wait` seconds for the outcome."""
    body = await json_body(request)
    unknown = set(body) - {"link", "wait"}
    if unknown:
        raise ApiError(400, "bad_request", f"unknown field(s): {', '.join(sorted(unknown))}")
    link, wait = body.get("link"), body.get("wait", 0)
    if not isinstance(link, str):
        raise ApiError(400, "bad_request", 'send {"link": "P2PM:..."}')
    if type(wait) not in (int, float) or not 0 <= wait <= MAX_WAIT:
        raise ApiError(400, "bad_request", f"wait must be a number of seconds up to {MAX_WAIT:g}")
    pairings = request.app[NODE].pairings
    try:
        with node_errors("invalid_link"):
            record = await pairings.pair(link)
    except ValueError as exc:  # whatever else a hostile link makes the decoder raise
        raise ApiError(400, "invalid_link", f"this is not a pairing link ({exc})") from None
    if wait:
        record = await pairings.wait(record.id, float(wait)) or record
    status = 200 if record.state is PairingState.CONFIRMED else 202
    return web.json_response({"pairing": views.pairing_json(record)}, status=status)


@routes.get(f"{API_PREFIX}/friends/{{ref}}")
async def get_friend(request: web.Request) -> web.Response:
    """One friend, by identity, identity prefix or name."""
    node = request.app[NODE]
    with node_errors("invalid_name"):
        friend = node.friends.resolve(_friend_ref(request))
    return web.json_response(node.friend_json(friend))


@routes.patch(f"{API_PREFIX}/friends/{{ref}}")
async def rename_friend(request: web.Request) -> web.Response:
    """Change what we call a friend."""
    body = await json_body(request)
    if set(body) != {"name"}:
        raise ApiError(400, "bad_request", 'send {"name": ...}')
    node = request.app[NODE]
    with node_errors("invalid_name"):
        friend = await node.friends.rename(_friend_ref(request), body["name"])
    return web.json_response(node.friend_json(friend))


@routes.delete(f"{API_PREFIX}/friends/{{ref}}")
async def remove_friend(request: web.Request) -> web.Response:
    """Forget a friend and drop any link to them."""
    node = request.app[NODE]
    with node_errors("invalid_name"):
        friend = await node.friends.remove(_friend_ref(request))
    return web.json_response({"removed": node.friend_json(friend)})


@routes.post(f"{API_PREFIX}/friends/{{ref}}/block")
async def block_friend(request: web.Request) -> web.Response:
    """Refuse every link from this identity until unblocked."""
    node = request.app[NODE]
    with node_errors("invalid_name"):
        friend = await node.friends.set_blocked(_friend_ref(request), blocked=True)
    return web.json_response(node.friend_json(friend))


@routes.post(f"{API_PREFIX}/friends/{{ref}}/unblock")
async def unblock_friend(request: web.Request) -> web.Response:
    """Accept links from this identity again."""
    node = request.app[NODE]
    with node_errors("invalid_name"):
        friend = await node.friends.set_blocked(_friend_ref(request), blocked=False)
    return web.json_response(node.friend_json(friend))


@routes.get(f"{API_PREFIX}/peers")
async def peers(request: web.Request) -> web.Response:
    """Who is connected, since when, found how, bytes each way."""
    node = request.app[NODE]
    return web.json_response(
        {"peers": [views.peer_json(p, node.friends.person) for p in node.links.peers()]}
    )


@routes.get(f"{API_PREFIX}/events")
async def events(request: web.Request) -> web.Response:
    """Events after `after`, waiting up to `timeout` seconds for one (long poll)."""
    after = integer(request, "after", 0, 0, 2**53)
    timeout = number(request, "timeout", 0, 0, MAX_WAIT)
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


@routes.get(f"{API_PREFIX}/circles")
async def list_circles(request: web.Request) -> web.Response:
    """The circles we own or belong to."""
    circles = request.app[NODE].circles
    return web.json_response({"circles": [circles.json(m) for m in circles.all()]})


@routes.post(f"{API_PREFIX}/circles")
async def create_circle(request: web.Request) -> web.Response:
    """A new circle of some of our friends."""
    body = fields(
        await json_body(request),
        {"name": str, "members": list, "members_can_post": bool, "kind": str},
        ("name",),
    )
    kind = body.get("kind", "album")
    if kind not in ("album", "conversation"):
        raise ApiError(400, "bad_request", 'kind is "album" or "conversation"')
    circles = request.app[NODE].circles
    with node_errors():
        manifest = await circles.create(
            body["name"],
            body.get("members", []),
            body.get("members_can_post", False),
            conversation=kind == "conversation",
        )
    return web.json_response(circles.json(manifest), status=201)


@routes.get(f"{API_PREFIX}/circles/{{ref}}")
async def get_circle(request: web.Request) -> web.Response:
    """One circle, by name or id."""
    circles = request.app[NODE].circles
    with node_errors():
        manifest = circles.resolve(request.match_info["ref"])
    return web.json_response(circles.json(manifest))


@routes.patch(f"{API_PREFIX}/circles/{{ref}}")
async def change_circle(request: web.Request) -> web.Response:
    """Rename, change who may post, add or remove members: a new epoch, a new key."""
    body = fields(
        await json_body(request),
        {"name": str, "members_can_post": bool, "add": list, "remove": list},
    )
    if not body:
        raise ApiError(400, "bad_request", "nothing to change")
    circles = request.app[NODE].circles
    with node_errors():
        manifest = await circles.change(
            request.match_info["ref"],
            add=body.get("add", []),
            remove=body.get("remove", []),
            name=body.get("name"),
            members_can_post=body.get("members_can_post"),
        )
    return web.json_response(circles.json(manifest))


@routes.delete(f"{API_PREFIX}/circles/{{ref}}")
async def delete_circle(request: web.Request) -> web.Response:
    """Forget a circle and its moments on this daemon."""
    circles = request.app[NODE].circles
    with node_errors():
        manifest = await circles.delete(request.match_info["ref"])
    return web.json_response({"deleted": circles.json(manifest)})


@routes.get(f"{API_PREFIX}/moments")
async def feed(request: web.Request) -> web.Response:
    """Posts, newest first, a page at a time: pass `cursor` = the last page's `next_cursor`
    (or, older and lossy within a second, `before` = its `next_before`)."""
    limit = integer(request, "limit", 50, 1, MAX_FEED)
    before = (
        integer(request, "before", 0, *INT64, what="a Unix time, in seconds")
        if "before" in request.query
        else None
    )
    cursor = request.query.get("cursor")
    if cursor is not None and before is not None:
        raise ApiError(400, "bad_request", "give cursor or before, not both")
    kind = request.query.get("kind")
    if kind not in (None, "album", "conversation"):
        raise ApiError(400, "bad_request", 'kind is "album" or "conversation"')
    node = request.app[NODE]
    with node_errors():
        page = await node.moments.feed_page(
            request.query.get("circle"),
            limit,
            before=before,
            cursor=cursor,
            conversations=None if kind is None else kind == "conversation",
        )
    shown = [views.moment_json(v, node.friends.person) for v in page.moments]
    await node.versions.annotate(shown, node.friends.person)
    return web.json_response(
        {
            "moments": shown,
            "next_cursor": page.next_cursor,
            "next_before": page.next_before,
        }
    )


@routes.post(f"{API_PREFIX}/moments")
async def post_moment(request: web.Request) -> web.Response:
    """Post to a circle: JSON for text, or multipart/form-data with photos and files."""
    if request.content_type == "multipart/form-data":
        # Files are streamed into the post's pack as they arrive; a photo is held whole
        # while it is read: a few uploads at a time keeps memory bounded.
        posting = request.app[NODE].posting
        async with request.app[UPLOADS], posting.upload() as upload:
            body = await multipart(request, posting, upload)
            return await _post(request, body, ("circle",), upload)
    body = await json_body(
        request,
        too_large=f"this post is over {MAX_BODY >> 10} KiB: a moment's text is at most "
        f"{MAX_TEXT >> 10} KiB; send photos and files as multipart/form-data",
    )
    return await _post(request, body, ("circle", "text"), None)


async def _post(
    request: web.Request,
    body: dict[str, Any],
    required: tuple[str, ...],
    upload: Upload | None,
) -> web.Response:
    fields(body, {"circle": str, "text": str, "expires_in": int}, required)
    if "expires_in" in body and not 0 < body["expires_in"] <= MAX_EXPIRY:
        raise ApiError(400, "bad_request", "expires_in is a number of seconds, up to 10 years")
    node = request.app[NODE]
    with node_errors():
        moment = await node.posting.post(
            body["circle"], body.get("text", ""), body.get("expires_in"), upload=upload
        )
    circle = node.circles.current(moment.circle_id)
    # The post as it was just made (not read back): no comments yet, every chunk here;
    # but its place among the posts of its second is the store's.
    stored = await node.moments.row_of(moment.id)
    view = views.MomentView(
        row=StoredMoment(
            moment_id=moment.id,
            circle_id=moment.circle_id,
            author=bytes(moment.author),
            seq=moment.seq,
            epoch=moment.epoch,
            created=moment.time,
            kind=moment.content.kind,
            reply_to=None,
            expires=moment.content.expires,
            retracted=False,
            envelope=moment.envelope,
            place=stored.place if stored else 0,
        ),
        moment=moment,
        circle_name=circle.name if circle else "",
        replies=[],
        held=[ref.total() for ref in moment.content.blobs],
    )
    return web.json_response(views.moment_json(view, node.friends.person), status=201)


def _blob_headers(ref: BlobRef, kind: BlobKind) -> dict[str, str]:
    """How a photo or file is served. What its author declared is data, never a header:
    a photo goes out as one of the image types we post (a reference declaring another is
    refused when decoded; checked again here), a file always as an attachment of no
    type, under a safe name; nosniff and the sandboxing policy (webapp._on_prepare) on
    both, so that nothing a peer sent can run as a page of ours."""
    headers = {
        "Cache-Control": "private, max-age=3600",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": SANDBOX_CSP,
    }
    if kind is BlobKind.PHOTO and ref.media_type in PHOTO_TYPES:
        return headers | {"Content-Type": ref.media_type, "Content-Disposition": "inline"}
    name = views.download_name(ref.name or ("photo" if kind is BlobKind.PHOTO else "file"))
    ascii_name = name.encode("ascii", errors="replace").decode()
    ascii_name = ascii_name.replace("?", "_").replace('"', "_")
    # A video a page plays in a <video>: its exact type, for these two only (moments.md 4.8).
    video = kind is BlobKind.FILE and ref.media_type in VIDEO_TYPES
    return headers | {
        "Content-Type": ref.media_type if video else "application/octet-stream",
        "Content-Disposition": (
            f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"
        ),
    }


async def _send_blob(request: web.Request, kind: BlobKind, thumbnail: bool) -> web.StreamResponse:
    moments = request.app[NODE].moments
    n_text = request.match_info["n"]
    if INTEGER.fullmatch(n_text) is None or not 1 <= int(n_text) <= MAX_BLOBS:
        raise ApiError(400, "bad_request", f"photos and files are numbered from 1 to {MAX_BLOBS}")
    with node_errors():
        ref = await moments.blob(request.match_info["id"], kind, int(n_text), thumbnail)
        reader = await moments.open_blob(ref)  # errors stay JSON until here
    # Content-addressed: the blob's first chunk (or index piece) names these very bytes.
    etag = f'"{(ref.index or ref.chunks)[0].hex()[:32]}"'
    headers = _blob_headers(ref, kind) | {"Accept-Ranges": "bytes", "ETag": etag}
    wanted = None
    if_range = request.headers.get("If-Range")
    if "Range" in request.headers and (if_range is None or if_range == etag):
        try:
            wanted = parse_range(request.headers["Range"], ref.size)
        except RangeNotSatisfiable:
            raise ApiError(
                416,
                "range_not_satisfiable",
                f"this photo or file has {ref.size} bytes",
                headers={"Content-Range": f"bytes */{ref.size}"},
            ) from None
    if wanted is None:
        wanted = ByteRange(first=0, last=ref.size - 1, size=ref.size)
        response = web.StreamResponse(headers=headers)
    else:
        response = web.StreamResponse(
            status=206, headers=headers | {"Content-Range": wanted.content_range()}
        )
    response.content_length = max(0, wanted.length)
    await response.prepare(request)
    step = max(1, DOWNLOAD_BATCH // ref.chunk_size)  # chunks read and decrypted at once
    start = wanted.first // ref.chunk_size
    end = min(len(reader.addresses), wanted.last // ref.chunk_size + 1) if ref.size else 1
    for first in range(start, end, step):
        offset = first * ref.chunk_size
        for plain in await asyncio.to_thread(reader.read_many, first, min(step, end - first)):
            cut = plain[max(0, wanted.first - offset) : max(0, wanted.last + 1 - offset)]
            offset += len(plain)
            await response.write(cut)
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
    node = request.app[NODE]
    with node_errors():
        view = await node.moments.get(request.match_info["id"])
    shown = views.moment_json(view, node.friends.person)
    await node.versions.annotate([shown], node.friends.person)
    return web.json_response(shown)


@routes.delete(f"{API_PREFIX}/moments/{{id}}")
async def retract_moment(request: web.Request) -> web.Response:
    """Retract one of our moments: its content is deleted everywhere, a marker stays."""
    with node_errors():
        target = await request.app[NODE].posting.retract(request.match_info["id"])
    return web.json_response({"retracted": views.moment_text(target)})


@routes.post(f"{API_PREFIX}/moments/{{id}}/comments")
async def comment(request: web.Request) -> web.Response:
    """Comment on a moment; answers with the moment and its comments."""
    body = fields(await json_body(request), {"text": str}, ("text",))
    node = request.app[NODE]
    with node_errors():
        answer = await node.posting.comment(request.match_info["id"], body["text"])
        view = await node.moments.get(views.moment_text(answer.content.reply_to or b""))
    shown = views.moment_json(view, node.friends.person)
    await node.versions.annotate([shown], node.friends.person)
    return web.json_response(shown, status=201)


@routes.post(f"{API_PREFIX}/moments/{{id}}/reactions")
async def react(request: web.Request) -> web.Response:
    """React to a moment with an emoji; answers with the moment and its reactions."""
    body = fields(await json_body(request), {"emoji": str}, ("emoji",))
    node = request.app[NODE]
    with node_errors():
        answer = await node.posting.react(request.match_info["id"], body["emoji"])
        view = await node.moments.get(views.moment_text(answer.content.reply_to or b""))
    shown = views.moment_json(view, node.friends.person)
    await node.versions.annotate([shown], node.friends.person)
    return web.json_response(shown, status=201)
