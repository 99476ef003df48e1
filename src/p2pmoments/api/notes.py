"""The API's endpoints about notes written together (spec/openapi.yaml: /circles/{ref}/notes,
/notes/{id}; spec/notes.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from p2pmoments.api.base import API_PREFIX, ApiError, fields, node_errors, parse_json
from p2pmoments.core.notes import MAX_NOTE_TEXT
from p2pmoments.notes import NoteConflictError, Notes, NoteState, Version
from p2pmoments.views import People, circle_text, moment_text, person_json

__all__ = ["NOTES", "PEOPLE", "routes", "setup"]

NOTES = web.AppKey("notes", Notes)
PEOPLE: web.AppKey[People] = web.AppKey("people")  # who a key is
# A note's whole text as JSON: every character may take six bytes escaped (\u001f).
MAX_NOTE_BODY = 6 * MAX_NOTE_TEXT + 64 * 1024

routes = web.RouteTableDef()


async def _body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object, up to MAX_NOTE_BODY (a note's whole text fits)."""
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    too_large = f"a note's text is at most {MAX_NOTE_TEXT >> 20} MiB"
    if (request.content_length or 0) > MAX_NOTE_BODY:
        raise ApiError(413, "too_large", too_large)
    if request.content_length is not None:
        data = await request.read()  # known to be within bounds; kept for re-reads
    else:
        data = await request.content.read(MAX_NOTE_BODY + 1)  # chunked: never past it
    if len(data) > MAX_NOTE_BODY:
        raise ApiError(413, "too_large", too_large)
    body = parse_json(data)
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    return body


def _note_json(request: web.Request, note: NoteState, *, text: bool = True) -> dict[str, Any]:
    people = request.app[PEOPLE]
    out: dict[str, Any] = {
        "id": moment_text(note.id),
        "circle": circle_text(note.circle_id),
        "title": note.title,
        "chars": len(note.text),
        "version": note.version,
        "updated": note.updated,
        "editing": [person_json(people(p)) for p in note.editing],
        "authors": [person_json(people(p)) for p in note.authors],
    }
    if text:
        out["text"] = note.text
    return out


def _version_json(request: web.Request, v: Version) -> dict[str, Any]:
    return {
        "version": v.number,
        "author": person_json(request.app[PEOPLE](v.author)),
        "first": v.first,
        "last": v.last,
        "edits": v.edits,
        "title": v.title,
        "chars": v.chars,
    }


@routes.get(f"{API_PREFIX}/circles/{{ref}}/notes")
async def list_notes(request: web.Request) -> web.Response:
    """A circle's notes, oldest first, without their text."""
    with node_errors():
        notes = await request.app[NOTES].of_circle(request.match_info["ref"])
    return web.json_response({"notes": [_note_json(request, n, text=False) for n in notes]})


@routes.post(f"{API_PREFIX}/circles/{{ref}}/notes")
async def create_note(request: web.Request) -> web.Response:
    """A new note in a circle: a title and, if given, its first text."""
    body = fields(await _body(request), {"title": str, "text": str}, ("title",))
    with node_errors():
        note = await request.app[NOTES].create(
            request.match_info["ref"], body["title"], body.get("text", "")
        )
    return web.json_response(_note_json(request, note), status=201)


@routes.get(f"{API_PREFIX}/notes/{{id}}")
async def get_note(request: web.Request) -> web.Response:
    """One note: its title and text as merged so far, and the version to write from."""
    with node_errors():
        note = await request.app[NOTES].read(request.match_info["id"])
    return web.json_response(_note_json(request, note))


@routes.post(f"{API_PREFIX}/notes/{{id}}/edits")
async def edit_note(request: web.Request) -> web.Response:
    """Change a note: the new title and/or text (whole, or a splice of the text of
    `base`), as written from version `base`; it merges with what others wrote since."""
    raw = await _body(request)
    splice = raw.pop("splice", None)
    body = fields(raw, {"base": str, "title": str, "text": str})
    notes = request.app[NOTES]
    text = body.get("text")
    if splice is not None:
        if not isinstance(splice, dict):
            raise ApiError(400, "bad_request", "splice must be an object")
        if text is not None or "base" not in body:
            raise ApiError(400, "bad_request", "a splice needs a base and no text")
        splice = fields(splice, {"at": int, "delete": int, "insert": str}, ("at",))
        text = await _spliced(notes, request.match_info["id"], body["base"], splice)
    try:
        with node_errors():
            note = await notes.write(
                request.match_info["id"], base=body.get("base"), title=body.get("title"), text=text
            )
    except NoteConflictError as exc:
        raise ApiError(409, "stale", str(exc)) from None
    return web.json_response(_note_json(request, note))


async def _spliced(notes: Notes, ref: str, base: str, splice: dict[str, Any]) -> str:
    """The text of version `base` with `delete` characters at `at` replaced."""
    with node_errors():
        old = await notes.base_text(ref, base)
    if old is None:
        raise ApiError(409, "stale", "this note changed too much since: read it again")
    at, delete = splice["at"], splice.get("delete", 0)
    if not (0 <= at <= len(old) and 0 <= delete <= len(old) - at):
        raise ApiError(400, "bad_request", "the splice lies outside the text")
    new: str = old[:at] + splice.get("insert", "") + old[at + delete :]
    return new


@routes.get(f"{API_PREFIX}/notes/{{id}}/history")
async def note_history(request: web.Request) -> web.Response:
    """Who changed a note and when, grouped into versions, oldest first."""
    with node_errors():
        versions = await request.app[NOTES].history(request.match_info["id"])
    return web.json_response({"versions": [_version_json(request, v) for v in versions]})


@routes.post(f"{API_PREFIX}/notes/{{id}}/restore")
async def restore_note(request: web.Request) -> web.Response:
    """Make an earlier version the note's title and text again, as a new edit."""
    body = fields(await _body(request), {"version": int}, ("version",))
    with node_errors():
        note = await request.app[NOTES].restore(request.match_info["id"], body["version"])
    return web.json_response(_note_json(request, note))


def setup(app: web.Application, notes: Notes, people: People) -> None:
    """Serve the notes' endpoints; every open note's document is written at the end."""
    app[NOTES] = notes
    app[PEOPLE] = people
    app.add_routes(routes)

    async def context(app: web.Application) -> AsyncIterator[None]:
        yield
        await app[NOTES].aclose()

    app.cleanup_ctx.append(context)
