"""The event bus: ids, history bounds, gaps, and waking waiters."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from p2pmoments.events import EventBus


async def test_a_waiter_wakes_when_an_event_is_published() -> None:
    bus = EventBus()
    waiter = asyncio.ensure_future(bus.wait_after(0, timeout=30))
    for _ in range(3):
        await asyncio.sleep(0)  # let the waiter reach its wait: no timing involved
    assert not waiter.done()
    bus.publish("x", n=1)
    events, gap = await asyncio.wait_for(waiter, 5)
    assert [(e.id, e.kind, e.data) for e in events] == [(1, "x", {"n": 1})]
    assert gap is False


async def test_a_wait_with_nothing_new_returns_empty_after_its_timeout() -> None:
    bus = EventBus()
    bus.publish("a")
    assert await bus.wait_after(1, timeout=0.01) == ([], False)


async def test_history_is_bounded_and_a_slow_client_learns_of_the_gap() -> None:
    bus = EventBus(history=10)
    for i in range(25):
        bus.publish("e", i=i)
    events, gap = bus.after(3)
    assert gap is True
    assert [e.id for e in events] == list(range(16, 26))
    assert bus.after(15) == (events, False)


async def test_an_id_from_before_a_restart_is_a_gap() -> None:
    bus = EventBus()
    bus.publish("a")
    assert bus.after(500) == ([], True)


async def test_many_published_at_once_keep_their_ids_and_only_those_kept_are_made() -> None:
    bus = EventBus(history=10)
    bus.publish("before")
    made: list[int] = []

    def maker(i: int) -> Callable[[], dict[str, Any]]:
        def make() -> dict[str, Any]:
            made.append(i)
            return {"i": i}

        return make

    bus.publish_all([("e", maker(i)) for i in range(25)])
    events, gap = bus.after(1)
    assert gap is True  # a client that saw "before" missed 15 of them
    assert [(e.id, e.data["i"]) for e in events] == [(17 + k, 15 + k) for k in range(10)]
    assert made == list(range(15, 25))
    assert bus.last_id == 26
