"""The web app's live events: the daemon's events as Server-Sent Events, resumed after
the last one a page saw (Last-Event-ID), with a bound on the streams a session holds.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from p2pmoments.api.base import API_PREFIX, NODE, ApiError
from p2pmoments.api.guards import connection_lost
from p2pmoments.core.admission import stream_room
from p2pmoments.events import Event
from p2pmoments.websessions import _session_of

__all__ = ["MAX_STREAMS", "MAX_STREAMS_PER_SESSION"]

HEARTBEAT = 15.0  # seconds between keep-alive comments on an idle event stream
RETRY_MS = 2000  # how soon a browser reconnects a dropped event stream
# Event streams: a browser holds at most 6 connections to a host, so a session (or the
# bearer token's holders, as one) needs no more than MAX_STREAMS_PER_SESSION; when all
# MAX_STREAMS are taken, the session holding the most gives up its oldest
# (core.admission.stream_room), and a refused page says so and tries again (live.js).
MAX_STREAMS = 64
MAX_STREAMS_PER_SESSION = 8
STREAM_RETRY_AFTER = 10  # seconds, in a refusal's Retry-After

_BOOT = web.AppKey("boot", str)
_STREAMS = web.AppKey("streams", dict)  # asyncio.Event that ends one -> its session
_CLOSING = web.AppKey("closing", asyncio.Event)

routes = web.RouteTableDef()


def _parse_last_id(text: str, boot: str) -> int | None:
    """The event id to continue after, from a Last-Event-ID like 'BOOT-42'; None if it
    belongs to another run of the daemon (or is nonsense): the client missed events."""
    head, _, tail = text.strip().rpartition("-")
    if head != boot or not tail.isdigit():
        return None
    return int(tail)


def _sse(event: str | None, ident: str, data: dict[str, Any]) -> bytes:
    lines = [] if event is None else [f"event: {event}"]
    lines += [f"id: {ident}", f"data: {json.dumps(data, ensure_ascii=False)}", "", ""]
    return "\n".join(lines).encode()


async def _next(bus: Any, after: int, *stops: asyncio.Event) -> tuple[list[Event], bool] | None:
    """Events after `after` (waiting up to HEARTBEAT), or None once any of `stops` is
    set: the app is closing, the stream ended to make room, or the client went."""
    waiter = asyncio.ensure_future(bus.wait_after(after, HEARTBEAT))
    stoppers = [asyncio.ensure_future(e.wait()) for e in stops]
    try:
        await asyncio.wait({waiter, *stoppers}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (waiter, *stoppers):
            task.cancel()
        await asyncio.gather(waiter, *stoppers, return_exceptions=True)
    if any(e.is_set() for e in stops) or waiter.cancelled():
        return None
    result: tuple[list[Event], bool] = waiter.result()
    return result


@routes.get(f"{API_PREFIX}/events/stream")
async def event_stream(request: web.Request) -> web.StreamResponse:
    """Events as they happen, as Server-Sent Events (text/event-stream)."""
    app = request.app
    streams: dict[asyncio.Event, str] = app[_STREAMS]
    session = _session_of(request) or ""  # "": the bearer token's holders
    ok, end = stream_room(
        list(streams.values()),
        session,
        max_streams=MAX_STREAMS,
        max_per_session=MAX_STREAMS_PER_SESSION,
    )
    if not ok:
        raise ApiError(
            429,
            "too_many_streams",
            f"at most {MAX_STREAMS_PER_SESSION} event streams a session and {MAX_STREAMS} "
            "in all; close a page, or try again later",
            headers={"Retry-After": str(STREAM_RETRY_AFTER)},
        )
    bus = app[NODE].events
    boot = app[_BOOT]
    resume = request.headers.get("Last-Event-ID")
    after_text = request.query.get("after")
    gap = False
    if resume is not None:
        found = _parse_last_id(resume, boot)
        gap = found is None
        after = bus.last_id if found is None else found
    elif after_text is not None:
        if not after_text.isdigit() or len(after_text) > 16:
            raise ApiError(400, "bad_request", "after must be an event id")
        after = int(after_text)
    else:
        after = bus.last_id
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
    )
    if end is not None:
        oldest = list(streams)[end]
        oldest.set()  # it ends; its page reconnects, and is refused if it holds its share
        del streams[oldest]
    ended = asyncio.Event()
    gone = connection_lost(request)  # its slot is free at once, not at the next write
    streams[ended] = session
    try:
        await response.prepare(request)
        await response.write(f"retry: {RETRY_MS}\n\n".encode())
        hello = {"last_id": after, "boot": boot}
        await response.write(_sse("gap" if gap else "hello", f"{boot}-{after}", hello))
        while True:
            answer = await _next(bus, after, app[_CLOSING], ended, gone)
            if answer is None:
                break
            events, missed = answer
            if missed:
                after = events[-1].id if events else bus.last_id
                await response.write(_sse("gap", f"{boot}-{after}", {"last_id": after}))
                continue
            for event in events:
                await response.write(_sse(None, f"{boot}-{event.id}", event.as_json()))
                after = event.id
            if not events:
                await response.write(b": keep-alive\n\n")
    except (ConnectionResetError, ConnectionError):
        pass  # the browser went away
    finally:
        streams.pop(ended, None)
    return response
