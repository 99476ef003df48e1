"""Reading a multipart post: fields, photos and files, each part bounded as it arrives."""

from __future__ import annotations

import io
import re
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from p2pmoments.api.base import MAX_FIELD, MAX_UPLOAD, READ_CHUNK, ApiError
from p2pmoments.core.moment import MAX_BLOBS, MAX_TEXT

__all__ = ["multipart"]


async def _read_part(part: BodyPartReader, limit: int, too_large: ApiError) -> bytes:
    """A part's bytes, raising `too_large` as soon as they pass `limit`."""
    data = io.BytesIO()  # getvalue() hands over its buffer: no second copy of a large part
    while chunk := await part.read_chunk(READ_CHUNK):
        data.write(chunk)
        if data.tell() > limit:
            raise too_large
    return data.getvalue()


_EXPIRY_DIGITS = re.compile(r"[0-9]{1,10}", re.ASCII)


async def multipart(
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
