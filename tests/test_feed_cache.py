"""The feed remembers the moments it opened (spec/store.md section 3.1), and shows what
changes at once: an edit, a retraction, an expiry, an author who no longer counts."""

from __future__ import annotations

import asyncio
from pathlib import Path

from p2pmoments.node import Node
from p2pmoments.store import Store
from p2pmoments.views import moment_text
from tests.multinode import befriend, eventually, make_home, read_feed, running, until


async def shown(node: Node) -> dict[str, str]:
    """Bob's feed: each post's id and the text it shows ('' once retracted)."""
    return {m["id"]: m["text"] for m in await read_feed(node, 100)}


async def test_the_feed_shows_an_edit_a_retraction_and_an_expiry_at_once(
    tmp_path: Path,
) -> None:
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob")]
    async with running(homes[0]) as alice, running(homes[1]) as bob:
        await befriend(alice, bob)
        await alice.circles.create("c", ["Bob"], members_can_post=True)
        await eventually(lambda: bob.circles.all(), what="the manifest")
        first = await alice.posting.post("c", "the beach")
        second = await alice.posting.post("c", "the ice cream")
        ids = moment_text(first.id), moment_text(second.id)

        async def both() -> bool:
            return set(ids) <= set(await shown(bob))

        await until(bob, both, what="both posts at Bob's")
        assert first.id in bob.moments.opened  # read once: remembered

        await alice.posting.edit(ids[0], "the beach, at dusk")

        async def edited() -> bool:
            return (await shown(bob)).get(ids[0]) == "the beach, at dusk"

        await until(bob, edited, what="the edit in Bob's feed")

        await alice.posting.retract(ids[1])

        async def retracted() -> bool:
            return (await shown(bob)).get(ids[1]) == ""

        await until(bob, retracted, what="the retraction in Bob's feed")
        feed = {m["id"]: m for m in await read_feed(bob, 100)}
        assert feed[ids[1]]["retracted"] is True
        assert second.id not in bob.moments.opened  # its content is gone from memory too

        brief = await alice.posting.post("c", "gone soon", expires_in=1)

        async def arrived() -> bool:
            return moment_text(brief.id) in await shown(bob)

        await until(bob, arrived, what="the short-lived post")
        assert brief.id in bob.moments.opened
        async with asyncio.timeout(20):
            while not await bob.moments.expire():  # the sweep, as its loop runs it
                await bob.events.wait_after(bob.events.last_id, 0.2)
        assert moment_text(brief.id) not in await shown(bob)
        assert brief.id not in bob.moments.opened


async def test_a_post_whose_author_no_longer_counts_leaves_the_feed(tmp_path: Path) -> None:
    """A post read once (remembered), then its author's device stops counting as a
    member (what a revocation past its cut-off does, spec/devices.md section 7): the
    feed stops showing it at the next read."""
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob")]
    async with running(homes[0]) as alice, running(homes[1]) as bob:
        await befriend(alice, bob)
        await alice.circles.create("c", ["Bob"], members_can_post=True)
        await eventually(lambda: bob.circles.all(), what="the manifest")
        post = await alice.posting.post("c", "from a device")

        async def there() -> bool:
            return moment_text(post.id) in await shown(bob)

        await until(bob, there, what="the post at Bob's")
        assert post.id in bob.moments.opened
        counted = bob.moments.person_of
        bob.moments.person_of = lambda author, circle, seq: (
            None if author == alice.me else counted(author, circle, seq)
        )
        assert moment_text(post.id) not in await shown(bob)


def test_the_feeds_pages_and_the_post_count_are_read_from_an_index(tmp_path: Path) -> None:
    """Each page of the feed (all circles, one, some) and the count of posts that status
    shows are read in an index's order: nothing sorts or scans every moment held (with
    100,000 held a page took 58 ms to sort, benchmarks/bigstore.py)."""
    store = Store.open(tmp_path / "db")
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    try:
        circle, other = b"c" * 32, b"d" * 32
        cursor = (1_800_000_000, b"m" * 32)
        store.posts(now=0, limit=51)
        store.posts(now=0, limit=51, circle_id=circle)
        store.posts(now=0, limit=51, among=[circle, other], after=cursor)
        store.posts(now=0, limit=51, before=1_800_000_000)
        store.counts()
        store._conn.set_trace_callback(None)
        reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
        assert len(reads) == 5
        for sql in reads:
            plan = " ".join(str(row[3]) for row in store._conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
            assert "TEMP B-TREE" not in plan, (sql, plan)
            assert "SCAN moments" not in plan, (sql, plan)
    finally:
        store.close()
