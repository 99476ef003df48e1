"""Reading a multipart post: fields, photos and files, each part bounded or streamed as it
arrives (a file is handed to the post's Upload piece by piece, never held whole)."""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from p2pmoments.api.base import MAX_FIELD, MAX_PHOTO, READ_CHUNK, ApiError, node_errors
from p2pmoments.core.blobs import MAX_CAPTION
from p2pmoments.core.moment import MAX_BLOBS, MAX_TEXT
from p2pmoments.posting import Posting, Upload

__all__ = ["multipart"]


async def _read_part(part: BodyPartReader, limit: int, too_large: ApiError) -> bytes:
    """A part's bytes, raising `too_large` as soon as they pass `limit`."""
    data = io.BytesIO()  # getvalue() hands over its buffer: no second copy of a large part
    while chunk := await part.read_chunk(READ_CHUNK):
        data.write(chunk)
        if data.tell() > limit:
            raise too_large
    return data.getvalue()


async def _pieces(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(READ_CHUNK):
        yield chunk


_EXPIRY_DIGITS = re.compile(r"[0-9]{1,10}", re.ASCII)


async def multipart(request: web.Request, posting: Posting, upload: Upload) -> dict[str, Any]:
    """Fields circle, text, expires_in (once each); parts named photo and file (repeatable,
    at most MAX_BLOBS in all), read into `upload` as they arrive; a caption part right
    after a photo is that photo's caption. Stops reading as soon
    as anything is wrong: a post to a circle it may not post in is refused before its
    photos and files are read, when the circle comes first (as the CLI sends it)."""
    body: dict[str, Any] = {}
    count = 0
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise ApiError(400, "bad_request", "nested multipart is not accepted")
            name = part.name
            if name in ("photo", "file"):
                if count >= MAX_BLOBS:
                    raise ApiError(
                        400, "bad_request", f"a moment has at most {MAX_BLOBS} photos and files"
                    )
                count += 1
                if name == "photo":
                    too_large = ApiError(
                        413, "too_large", f"a photo is at most {MAX_PHOTO >> 20} MiB"
                    )
                    data = await _read_part(part, MAX_PHOTO, too_large)
                    with node_errors():
                        await upload.add_photo(data)
                else:
                    media_type = part.headers.get("Content-Type", "application/octet-stream")
                    with node_errors():
                        await upload.add_file(part.filename or "file", media_type, _pieces(part))
            elif name == "caption":
                data = await _read_part(
                    part,
                    MAX_CAPTION,
                    ApiError(
                        400, "bad_request", f"a photo's caption is at most {MAX_CAPTION} bytes"
                    ),
                )
                try:
                    caption = data.decode("utf-8")
                except UnicodeDecodeError:
                    raise ApiError(400, "bad_request", "a caption is UTF-8 text") from None
                with node_errors():
                    upload.caption_last(caption)
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
                if name == "circle" and not count:
                    with node_errors():
                        posting.check(text)
                        upload.send_ahead(text)
            else:
                raise ApiError(400, "bad_request", f"unknown part {name!r}")
    except HttpProcessingError as exc:  # a malformed part header
        raise ApiError(400, "bad_request", f"the form is malformed: {exc.message}") from None
    except ValueError as exc:  # no boundary, a truncated body
        raise ApiError(400, "bad_request", f"the form is malformed: {exc}") from None
    return body
