"""Events for frontends: monotonic ids, a bounded history, resumable (spec/openapi.yaml).

A client remembers the last id it saw and asks for what came after; if it fell
behind further than the history reaches, it is told so (`gap`) and should
re-read the state it shows.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["HISTORY", "Event", "EventBus"]

HISTORY = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Something that happened, e.g. kind 'friend.added'."""

    id: int
    kind: str
    time: float
    data: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The JSON form sent to clients."""
        return {"id": self.id, "kind": self.kind, "time": self.time, "data": self.data}


class EventBus:
    """Publishes events to any number of waiting clients."""

    def __init__(self, history: int = HISTORY) -> None:
        self._events: collections.deque[Event] = collections.deque(maxlen=history)
        self._history = history
        self._next_id = 1
        # Made when a client waits, set and let go on the next publish: waiters hold the
        # one current when they began (a catch-up publishes 10,000 events; most have no
        # waiter to wake).
        self._published: asyncio.Event | None = None

    @property
    def last_id(self) -> int:
        """The id of the newest event, 0 if none."""
        return self._next_id - 1

    def publish(self, kind: str, /, **data: Any) -> Event:
        """Record an event and wake every waiting client."""
        event = Event(id=self._next_id, kind=kind, time=time.time(), data=data)
        self._next_id += 1
        self._events.append(event)
        if self._published is not None:
            self._published.set()
            self._published = None
        return event

    def publish_all(self, events: Sequence[tuple[str, Callable[[], dict[str, Any]]]]) -> None:
        """Publish several events at once, each as (kind, a function making its data).
        Those that fall out of the history at once (a catch-up stores thousands) take
        their ids, but are never made: no client could have read them."""
        passed = max(0, len(events) - self._history)
        self._next_id += passed
        for kind, make in events[passed:]:
            self.publish(kind, **make())

    def after(self, last_id: int) -> tuple[list[Event], bool]:
        """Events newer than `last_id`, and whether some were missed.

        Ids start again at 1 when the daemon restarts: an id beyond the newest
        also counts as a gap, and the client should re-read what it shows.
        """
        if last_id > self.last_id:
            return [], True
        events = [e for e in self._events if e.id > last_id]
        oldest = self._events[0].id if self._events else self._next_id
        return events, last_id + 1 < oldest and last_id < self.last_id

    async def wait_after(self, last_id: int, timeout: float) -> tuple[list[Event], bool]:
        """Like after(), but wait up to `timeout` seconds for something new."""
        events, gap = self.after(last_id)
        if events or timeout <= 0:
            return events, gap
        if self._published is None:
            self._published = asyncio.Event()
        published = self._published
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await published.wait()
        return self.after(last_id)
