"""Clocks hours apart (issue 23, spec/moments.md section 6): a moment from a clock ahead
is placed when it reached us, not hours in our future, and lives as long as its author
meant; nothing is refused for a time that is "in the future"."""

from __future__ import annotations

import time
from pathlib import Path

from p2pmoments.core.moment import Content, Kind, placed, seal_moment
from tests.multinode import read_feed
from tests.test_replication import family_of_two, wait_texts

HOURS = 3600


def test_a_moment_is_placed_no_later_than_it_arrived_and_keeps_its_lifetime() -> None:
    now = 1_800_000_000
    # Its author's clock five hours ahead: placed now, expiring an hour from now.
    assert placed(now + 5 * HOURS, now + 6 * HOURS, now) == (now, now + HOURS)
    # Behind, or a moment that travelled for a while: the author's own time and expiry.
    assert placed(now - 5 * HOURS, now - 4 * HOURS, now) == (now - 5 * HOURS, now - 4 * HOURS)
    assert placed(now + 5 * HOURS, None, now) == (now, None)
    assert placed(now, now - 10, now) == (now, now)  # an expiry before its time: gone


async def test_a_post_from_a_clock_hours_ahead_is_shown_in_order_and_not_expired_early(
    tmp_path: Path,
) -> None:
    async with family_of_two(tmp_path) as (alice, bob):
        manifest = alice.circles.resolve("family")
        ahead = int(time.time()) + 5 * HOURS  # Alice's clock, wrong by five hours
        early = seal_moment(
            alice.identity,
            manifest,
            alice.circles.key_for(manifest),
            seq=1,
            time=ahead,
            content=Content(kind=Kind.POST, text="from the future", expires=ahead + HOURS),
        )
        assert await alice.replication.receive([early.envelope])  # as if she had posted it
        await wait_texts(bob, ["from the future"])
        await alice.posting.post("family", "posted after it arrived")
        await wait_texts(bob, ["from the future", "posted after it arrived"])
        feed = await read_feed(bob)
        # What was posted after it arrived is above it; and it is shown, not expired.
        assert [m["text"] for m in feed] == ["posted after it arrived", "from the future"]
        shown = feed[1]
        assert shown["time"] <= int(time.time())
        assert int(time.time()) < shown["expires"] <= int(time.time()) + HOURS
