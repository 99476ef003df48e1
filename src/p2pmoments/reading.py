"""Unread: how many posts in each circle the person has not seen yet, kept by the daemon
so that every open page and a later visit agree (issue 20, item 4).

A read mark per circle is the position, in the feed's order, of the newest post the person
has seen there (spec/store.md, version 7); posts past it are unread, but for the
person's own, from any of their devices. Marks only move forward.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable

from p2pmoments.circles import Circles
from p2pmoments.core.manifest import Manifest
from p2pmoments.core.moment import Kind
from p2pmoments.errors import UserInputError
from p2pmoments.events import EventBus
from p2pmoments.moments import Moments
from p2pmoments.store import AsyncStore, Place, Store
from p2pmoments.views import CircleUnread, circle_text

__all__ = ["Reading"]


async def _nothing(circle: Manifest, place: Place) -> None:
    pass


class Reading:
    """Read marks and unread counts."""

    def __init__(
        self,
        store: AsyncStore,
        events: EventBus,
        circles: Circles,
        moments: Moments,
        mine: Callable[[bytes], bool],
    ) -> None:
        self._store = store
        self._events = events
        self._circles = circles
        self._moments = moments
        self._mine = mine  # whether a moment's author (a device key) is the person's
        # Told when a mark moved (read receipts: receipts.py).
        self.on_read: Callable[[Manifest, Place], Awaitable[None]] = _nothing

    async def counts(self) -> list[CircleUnread]:
        """Every circle's unread count and mark, in the order circles are listed."""
        marks = await self._store.run(Store.read_marks)
        rows = await self._store.run(Store.unread_by_author, int(time.time()))
        unread: Counter[bytes] = Counter()
        for circle_id, author, _, count in rows:
            if not self._mine(author):
                unread[circle_id] += count
        return [
            CircleUnread(
                circle_id=m.circle_id, unread=unread[m.circle_id], read_to=marks.get(m.circle_id)
            )
            for m in self._circles.all()
        ]

    async def mark(self, circle_ref: str, moment_ref: str | None) -> bool:
        """The person has seen a circle up to a post of it (None: up to its newest held);
        True if the mark moved. Tells every open page (event circle.read)."""
        circle = self._circles.resolve(circle_ref)
        now = int(time.time())
        place: Place | None
        if moment_ref is None:
            place = await self._store.run(Store.newest_post, circle.circle_id, now)
        else:
            row = await self._moments.stored(moment_ref)
            if row.circle_id != circle.circle_id or row.kind is not Kind.POST:
                raise UserInputError(f"this moment is not a post in {circle.name}")
            place = (row.created, row.place, row.seq)
        if place is None:
            return False
        moved = await self._store.run(Store.mark_read, circle.circle_id, place, now)
        if moved:
            self._events.publish("circle.read", id=circle_text(circle.circle_id))
            await self.on_read(circle, place)
        return bool(moved)
