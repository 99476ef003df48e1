"""The API's endpoints about files with versions (spec/openapi.yaml: /moments/{id}/versions,
spec/moments.md section 9)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from p2pmoments.api.base import (
    API_PREFIX,
    MAX_FIELD,
    NODE,
    READ_CHUNK,
    UPLOADS,
    ApiError,
    fields,
    json_body,
    node_errors,
)
from p2pmoments.api.routes import DOWNLOAD_BATCH, _blob_headers
from p2pmoments.core.blobs import BlobKind
from p2pmoments.core.moment import MAX_NOTE, MAX_PARENTS
from p2pmoments.core.versions import MAX_VERSIONS

__all__ = ["routes"]

routes = web.RouteTableDef()

_VERSION_NUMBER = re.compile(r"[1-9][0-9]{0,3}", re.ASCII)


def _number(text: str) -> int:
    if _VERSION_NUMBER.fullmatch(text) is None or int(text) > MAX_VERSIONS + 1:
        raise ApiError(400, "bad_request", "versions are numbered from 1")
    return int(text)


@routes.get(f"{API_PREFIX}/moments/{{id}}/versions")
async def list_versions(request: web.Request) -> web.Response:
    """A post's file and its versions: who, when, size, note; the newest; the siblings."""
    node = request.app[NODE]
    with node_errors():
        listing = await node.versions.listing(request.match_info["id"])
    return web.json_response(node.versions.listing_json(listing, node.friends.person))


async def _pieces(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(READ_CHUNK):
        yield chunk


async def _text_part(part: BodyPartReader, limit: int, name: str) -> str:
    data = bytearray()
    while chunk := await part.read_chunk(READ_CHUNK):
        data += chunk
        if len(data) > limit:
            raise ApiError(400, "bad_request", f"the {name} field is too long")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "bad_request", f"the {name} field is not UTF-8 text") from None


@routes.post(f"{API_PREFIX}/moments/{{id}}/versions")
async def add_version(request: web.Request) -> web.Response:
    """A new version of a post's file: multipart/form-data with `note` and `parent`
    (repeatable, version numbers; none: every head) before one `file` part."""
    if request.content_type != "multipart/form-data":
        raise ApiError(400, "bad_request", "send the new version as multipart/form-data")
    node = request.app[NODE]
    note = ""
    parents: list[int] = []
    made: Any = None
    async with request.app[UPLOADS], node.posting.upload() as upload:
        try:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    raise ApiError(400, "bad_request", "nested multipart is not accepted")
                if made is not None:
                    raise ApiError(400, "bad_request", "the file is the last part, and only one")
                if part.name == "note":
                    note = await _text_part(part, MAX_NOTE, "note")
                elif part.name == "parent":
                    if len(parents) >= MAX_PARENTS:
                        raise ApiError(
                            400, "bad_request", f"a version follows at most {MAX_PARENTS}"
                        )
                    parents.append(_number((await _text_part(part, MAX_FIELD, "parent")).strip()))
                elif part.name == "file":
                    media_type = part.headers.get("Content-Type", "application/octet-stream")
                    with node_errors():
                        made = await node.versions.update(
                            request.match_info["id"],
                            upload,
                            part.filename or "file",
                            media_type,
                            _pieces(part),
                            note=note,
                            parents=parents,
                        )
                else:
                    raise ApiError(400, "bad_request", f"unknown part {part.name!r}")
        except HttpProcessingError as exc:
            raise ApiError(400, "bad_request", f"the form is malformed: {exc.message}") from None
        except ValueError as exc:
            raise ApiError(400, "bad_request", f"the form is malformed: {exc}") from None
    if made is None:
        raise ApiError(400, "bad_request", "a new version needs its file (a part named file)")
    return await _answer(request, made.id)


async def _answer(request: web.Request, version_id: bytes) -> web.Response:
    node = request.app[NODE]
    with node_errors():
        listing = await node.versions.listing(request.match_info["id"])
    body = node.versions.listing_json(listing, node.friends.person)
    placed = version_id in listing.history.order
    body["version"] = listing.history.number(version_id) if placed else None
    return web.json_response(body, status=201)


@routes.post(f"{API_PREFIX}/moments/{{id}}/versions/{{n}}/pick")
async def pick_version(request: web.Request) -> web.Response:
    """Resolve a file's siblings by picking one of them (a version following them all,
    with that one's content: nothing is uploaded)."""
    n = _number(request.match_info["n"])
    body = fields(await json_body(request) if request.can_read_body else {}, {"note": str})
    if len(body.get("note", "").encode("utf-8")) > MAX_NOTE:
        raise ApiError(400, "bad_request", f"a note is at most {MAX_NOTE} bytes")
    node = request.app[NODE]
    with node_errors():
        made = await node.versions.pick(request.match_info["id"], n, body.get("note", ""))
    return await _answer(request, made.id)


@routes.get(f"{API_PREFIX}/moments/{{id}}/versions/{{n}}/file")
async def get_version(request: web.Request) -> web.StreamResponse:
    """Version n of a post's file (1: the post's own), as an attachment."""
    n = _number(request.match_info["n"])
    node = request.app[NODE]
    with node_errors():
        ref, reader = await node.versions.reader(request.match_info["id"], n)
    response = web.StreamResponse(headers=_blob_headers(ref, BlobKind.FILE))
    response.content_length = ref.size
    await response.prepare(request)
    step = max(1, DOWNLOAD_BATCH // ref.chunk_size)
    for first in range(0, len(reader.addresses), step):
        for plain in await asyncio.to_thread(reader.read_many, first, step):
            await response.write(plain)
    await response.write_eof()
    return response
