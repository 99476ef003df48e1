"""Reading the feed a page at a time (issue 10, item 5): a cursor of (time, id) never skips
or repeats a post, however many share a second."""

from __future__ import annotations

import asyncio
import time
import types
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from p2pmoments.api import API_PREFIX, create_app
from p2pmoments.node import Node
from p2pmoments.store import Store
from p2pmoments.views import moment_text
from tests.test_api import AUTH, TOKEN, error_of, spec_check

Client = TestClient[Any, Any]
SECOND = 1_800_000_000  # every post of this test is made in this one second


@pytest.fixture
def one_second(monkeypatch: pytest.MonkeyPatch) -> None:
    """The clock of posting and of the feed stands still (time.monotonic and the rest go
    on)."""
    frozen = types.SimpleNamespace(
        time=lambda: SECOND + 0.5, monotonic=time.monotonic, perf_counter=time.perf_counter
    )
    monkeypatch.setattr("p2pmoments.moments.time", frozen)
    monkeypatch.setattr("p2pmoments.holding.time", frozen)
    monkeypatch.setattr("p2pmoments.posting.time", frozen)


@pytest.fixture
async def api(node: Node, aiohttp_client: Callable[..., Awaitable[Client]]) -> Client:
    app = create_app(node, TOKEN)
    app.middlewares.insert(0, spec_check)
    return await aiohttp_client(app)


async def page(api: Client, query: str) -> dict[str, Any]:
    response = await api.get(f"{API_PREFIX}/moments?{query}", headers=AUTH)
    assert response.status == 200, await response.text()
    return dict(await response.json())


async def test_260_posts_in_one_second_read_200_at_a_time_all_come_back_once(
    api: Client, node: Node, one_second: None
) -> None:
    await node.circles.create("family", [], members_can_post=False)
    posted = await asyncio.gather(*(node.posting.post("family", f"n{i}") for i in range(260)))
    assert {m.time for m in posted} == {SECOND}
    first = await page(api, "limit=200")
    assert len(first["moments"]) == 200
    assert first["next_cursor"] is not None
    second = await page(api, f"limit=200&cursor={first['next_cursor']}")
    assert len(second["moments"]) == 60
    assert second["next_cursor"] is None
    assert second["next_before"] is None
    seen = [m["id"] for m in first["moments"] + second["moments"]]
    assert len(seen) == len(set(seen)) == 260
    # Newest first within the second too: the order they were posted in, reversed.
    texts = [m["text"] for m in first["moments"] + second["moments"]]
    assert texts == [f"n{i}" for i in reversed(range(260))]
    # The cursor stays good for the circle's own feed too.
    circle = await page(api, f"circle=family&limit=200&cursor={first['next_cursor']}")
    assert [m["id"] for m in circle["moments"]] == [m["id"] for m in second["moments"]]


async def test_pages_follow_the_feed_and_end_with_a_null_cursor(api: Client, node: Node) -> None:
    await node.circles.create("family", [], members_can_post=False)
    for i in range(7):
        await node.posting.post("family", f"n{i}")
    ids, cursor, pages = [], "", 0
    while True:
        got = await page(api, "limit=3" + (f"&cursor={cursor}" if cursor else ""))
        ids += [m["id"] for m in got["moments"]]
        pages += 1
        if got["next_cursor"] is None:
            break
        cursor = got["next_cursor"]
    assert pages == 3
    everything = await page(api, "limit=50")
    assert ids == [m["id"] for m in everything["moments"]]
    assert everything["next_cursor"] is None


@pytest.mark.parametrize(
    "query",
    [
        "cursor=nonsense",
        "cursor=1." + "a" * 56,
        "cursor=" + "9" * 20 + "." + "a" * 56,
        "cursor=1.x&before=5",
    ],
)
async def test_a_cursor_the_feed_did_not_give_is_refused(api: Client, query: str) -> None:
    response = await api.get(f"{API_PREFIX}/moments?{query}", headers=AUTH)
    assert response.status == 400
    await error_of(response)


def _delete_rows(store: Store, ids: list[bytes]) -> list[bytes]:
    """Take moments out of the store, returning their envelopes (a test's own surgery)."""
    marks = ",".join("?" * len(ids))
    with store._transaction() as conn:
        envelopes = {
            r[0]: r[1]
            for r in conn.execute(
                f"SELECT moment_id, envelope FROM moments WHERE moment_id IN ({marks})",
                ids,
            )
        }
        conn.execute(f"DELETE FROM moments WHERE moment_id IN ({marks})", ids)
    return [envelopes[i] for i in ids]


async def test_four_messages_and_four_comments_of_one_second_read_back_as_they_were_sent(
    api: Client, node: Node, one_second: None
) -> None:
    await node.circles.create("chat", [], members_can_post=True)
    words = ["one", "two", "three", "four"]
    sent = [await node.posting.post("chat", w) for w in words]
    first = moment_text(sent[0].id)
    said = [await node.posting.comment(first, f"re {w}") for w in words]
    assert {m.time for m in sent + said} == {SECOND}
    # Another device stores them in whatever order they reach it (a catch-up, relays):
    # here, the reverse of the order they were sent in.
    ids = [m.id for m in sent + said]
    envelopes = await node.store.run(_delete_rows, ids)
    opened = await node.moments.open_many(envelopes[::-1])
    assert len(await node.moments.store_many(opened.moments)) == 8

    for query in ("circle=chat&limit=50", "limit=2", "limit=50"):
        got: list[dict[str, Any]] = []
        cursor = ""
        while True:
            answer = await page(api, query + (f"&cursor={cursor}" if cursor else ""))
            got += answer["moments"]
            if not (cursor := answer["next_cursor"]):
                break
        assert [m["text"] for m in got] == words[::-1], query  # newest first
        assert sorted(m["order"] for m in got) == [m["order"] for m in got][::-1]
    one = (await page(api, "limit=50"))["moments"][-1]
    assert [c["text"] for c in one["comments"]] == [f"re {w}" for w in words]
    response = await api.get(f"{API_PREFIX}/moments/{first}", headers=AUTH)
    assert [c["text"] for c in (await response.json())["comments"]] == [f"re {w}" for w in words]
