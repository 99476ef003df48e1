"""Circles and moments on one daemon: create, post, comment, react, retract, expire, feed."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from p2pmoments.core.errors import RejectedError
from p2pmoments.core.moment import Content, Kind, seal_moment
from p2pmoments.errors import AmbiguousError, NotFoundError, NotOwnerError, UserInputError
from p2pmoments.node import Node
from p2pmoments.store import Store
from p2pmoments.verifying import PROCESS_BATCH
from tests.multinode import eventually, get_moment, make_home, read_feed, running


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Node, Node]]:
    """Alice and her friend Bob."""
    a_home, b_home = await make_home(tmp_path, "Alice"), await make_home(tmp_path, "Bob")
    async with running(a_home) as alice, running(b_home) as bob:
        link, _ = await alice.pairings.new_code()
        await bob.pairings.wait((await bob.pairings.pair(link)).id, timeout=10)
        await eventually(lambda: alice.friends.all(), what="Alice to know Bob")
        yield alice, bob


async def test_post_comment_react_and_read_the_feed(pair: tuple[Node, Node]) -> None:
    alice, _ = pair
    family = await alice.circles.create("family", ["Bob"], members_can_post=True)
    assert [m.name for m in alice.circles.all()] == ["family"]
    assert family.is_member(pair[1].identity.public.verify_key)
    moment = await alice.posting.post("Family", "the two-year-old with the ice cream")
    await alice.posting.comment(_text(moment.id), "so sweet")
    await alice.posting.react(_text(moment.id), "❤️")
    feed = await read_feed(alice, 50)
    assert len(feed) == 1
    item = feed[0]
    assert item["text"] == "the two-year-old with the ice cream"
    assert item["circle"]["name"] == "family"
    assert item["author"]["name"] == "Alice"
    assert [c["text"] for c in item["comments"]] == ["so sweet"]
    assert item["reactions"] == {"❤️": ["Alice"]}
    assert (await alice.store.run(Store.counts)).moments == 1


def _text(raw: bytes) -> str:
    from p2pmoments.views import moment_text

    return moment_text(raw)


async def test_a_moment_can_be_found_by_a_prefix_of_its_id(pair: tuple[Node, Node]) -> None:
    alice, _ = pair
    await alice.circles.create("family", [], members_can_post=False)
    moment = await alice.posting.post("family", "hello")
    found = await get_moment(alice, _text(moment.id)[:10])
    assert found["text"] == "hello"
    with pytest.raises(NotFoundError):
        await get_moment(alice, "zzzzzzzz")


async def test_retraction_deletes_the_content_and_leaves_a_marker(pair: tuple[Node, Node]) -> None:
    alice, _ = pair
    await alice.circles.create("work", [], members_can_post=False)
    moment = await alice.posting.post("work", "launch at 9")
    await alice.posting.comment(_text(moment.id), "typo")
    await alice.posting.retract(_text(moment.id))
    item = await get_moment(alice, _text(moment.id))
    assert item["retracted"] is True
    assert item["text"] == ""
    assert item["comments"] == []
    row = await alice.store.run(Store.moment, moment.id, 0)
    assert row is not None
    assert row.envelope == b""  # the envelope itself is gone from disk
    with pytest.raises(NotFoundError, match="retracted"):
        await alice.posting.comment(_text(moment.id), "too late")


async def test_an_expired_moment_is_deleted_and_never_shown(pair: tuple[Node, Node]) -> None:
    alice, _ = pair
    await alice.circles.create("pub", [], members_can_post=False)
    # Expiry counts from the post's whole second: 3 s leaves at least 2 to read it
    # (with 1, a post at x.99 had expired before the read, one run in a few).
    moment = await alice.posting.post("pub", "tonight only", expires_in=3)
    assert len(await read_feed(alice, 10, "pub")) == 1
    await eventually(lambda: time.time() > moment.content.expires, timeout=10)  # type: ignore[operator]
    assert await read_feed(alice, 10, "pub") == []
    assert await alice.moments.expire() == 1
    assert await alice.store.run(Store.moment, moment.id, 0) is None


async def test_changing_a_circle_starts_a_new_epoch_without_the_removed(
    pair: tuple[Node, Node],
) -> None:
    alice, bob = pair
    circle = await alice.circles.create("family", ["Bob"], members_can_post=True)
    changed = await alice.circles.change("family", remove=["Bob"])
    assert changed.epoch == circle.epoch + 1
    assert not changed.is_member(bob.identity.public.verify_key)
    from p2pmoments.core.manifest import epoch_key

    with pytest.raises(RejectedError):
        epoch_key(changed, bob.identity)
    renamed = await alice.circles.change("family", name="family & co", members_can_post=False)
    assert (renamed.name, renamed.members_can_post, renamed.epoch) == ("family & co", False, 2)


async def test_receiving_keeps_good_moments_and_records_why_bad_ones_are_dropped(
    pair: tuple[Node, Node],
) -> None:
    alice, bob = pair
    circle = await alice.circles.create("family", ["Bob"], members_can_post=False)
    key = alice.circles.key_for(circle)
    # Bob (a member) comments on Alice's post: accepted.
    post = await alice.posting.post("family", "hi")
    comment = seal_moment(
        bob.identity,
        circle,
        key,
        seq=1,
        time=int(time.time()),
        content=Content(kind=Kind.COMMENT, text="hey", reply_to=post.id),
    )
    assert await alice.replication.receive([comment.envelope])
    # Bob's post in an owner-only circle: refused with the reason on record.
    import dataclasses

    posting = dataclasses.replace(circle, members_can_post=True)
    bad = seal_moment(
        bob.identity, posting, key, seq=2, time=1, content=Content(kind=Kind.POST, text="mine")
    )
    assert await alice.replication.receive([bad.envelope]) == []
    assert await alice.replication.receive([b"junk"]) == []
    reasons = [
        r[0]
        for r in await alice.store.run(
            lambda s: list(s._conn.execute("SELECT reason FROM rejected ORDER BY id"))
        )
    ]
    assert reasons[0] == "only the owner may post in this circle"
    assert reasons[1].startswith("too large or malformed envelope")


async def test_a_big_batch_is_checked_in_a_worker_process_with_the_same_verdicts(
    pair: tuple[Node, Node],
) -> None:
    """A catch-up's batch has its signatures checked in a process of its own
    (verifying.py): what is kept, and why the rest is refused, is as for one moment."""
    alice, bob = pair
    circle = await alice.circles.create("family", ["Bob"], members_can_post=True)
    key = alice.circles.key_for(circle)
    n = PROCESS_BATCH + 44
    envelopes = [
        seal_moment(
            bob.identity, circle, key, seq=i, time=i, content=Content(kind=Kind.POST, text=f"{i}")
        ).envelope
        for i in range(1, n + 1)
    ]
    forged = bytearray(envelopes[10])
    forged[-5] ^= 1  # inside the signature
    envelopes[10] = bytes(forged)
    wrong_key = seal_moment(
        bob.identity, circle, b"k" * 32, seq=11, time=11, content=Content(kind=Kind.POST)
    )
    envelopes[11] = wrong_key.envelope  # signed, but its content does not open
    envelopes[12] = b"junk"
    late = bytearray(envelopes[-20])  # in the batch's last part (one per worker process)
    late[-5] ^= 1
    envelopes[-20] = bytes(late)
    kept = await alice.replication.receive(envelopes)
    assert len(kept) == n - 4
    assert all(m.seq != n - 19 for m in kept)
    assert alice.moments.verifier.batches >= 1  # the worker process checked them
    reasons = [
        r[0]
        for r in await alice.store.run(
            lambda s: list(s._conn.execute("SELECT reason FROM rejected ORDER BY id"))
        )
    ]
    assert reasons[:2] == ["bad signature", "the content does not decrypt under the epoch key"]
    assert reasons[2].startswith("too large or malformed envelope")
    assert reasons[3:] == ["bad signature"]
    await alice.moments.verifier.close()
    await alice.moments.verifier.close()  # twice: nothing left to stop


async def test_names_and_rules(pair: tuple[Node, Node]) -> None:
    alice, _ = pair
    await alice.circles.create("family", [], members_can_post=False)
    with pytest.raises(UserInputError, match="already have a circle"):
        await alice.circles.create("Family", [], members_can_post=False)
    with pytest.raises(NotFoundError):
        await alice.posting.post("nope", "x")
    with pytest.raises(NotFoundError):
        await alice.circles.create("other", ["Nobody"], members_can_post=False)
    with pytest.raises(UserInputError, match="needs some text"):
        await alice.posting.post("family", "   ")


async def test_only_the_owner_changes_a_circle_and_only_the_author_retracts(
    pair: tuple[Node, Node],
) -> None:
    alice, bob = pair
    circle = await alice.circles.create("family", ["Bob"], members_can_post=True)
    # Bob learns the manifest (as sync will bring it) and holds the circle too.
    await bob.circles.keep(circle, "circle.created")
    with pytest.raises(NotOwnerError, match="only its owner"):
        await bob.circles.change("family", name="mine now")
    mine = await alice.posting.post("family", "from Alice")
    # Their link may have brought it already (then receive says it is not new).
    await bob.replication.receive([mine.envelope])
    assert (await get_moment(bob, _text(mine.id)))["text"] == "from Alice"
    with pytest.raises(NotOwnerError, match="only its author"):
        await bob.posting.retract(_text(mine.id))


async def test_an_ambiguous_circle_name_lists_the_candidates(pair: tuple[Node, Node]) -> None:
    alice, bob = pair
    await alice.circles.create("family", [], members_can_post=False)
    theirs = await bob.circles.create("family", ["Alice"], members_can_post=False)
    await alice.circles.keep(theirs, "circle.created")
    with pytest.raises(AmbiguousError, match="could be any of"):
        alice.circles.resolve("family")


async def test_a_moment_waiting_for_its_key_is_not_recorded_as_rejected(node: Node) -> None:
    """A device whose other device has not given it an epoch's key yet waits for it
    (spec/devices.md section 9): not a rejection in the store's record, unlike junk."""
    from p2pmoments.core.errors import NO_KEY_YET

    await node.moments.reject([(NO_KEY_YET, 100), ("bad signature", 90)], None)
    await node.moments.reject([(NO_KEY_YET, 100)], None)
    rows = await node.store.run(
        lambda s: list(s._conn.execute("SELECT reason, size FROM rejected ORDER BY id"))
    )
    assert [tuple(r) for r in rows] == [("bad signature", 90)]
