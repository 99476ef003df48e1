"""Circles and moments on one daemon: create, post, comment, react, retract, expire, feed."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from p2pmoments.core.errors import DecodeError, RejectedError
from p2pmoments.core.moment import Content, Kind, seal_moment
from p2pmoments.errors import AmbiguousError, NotFoundError, NotOwnerError
from p2pmoments.node import Node
from p2pmoments.store import Store
from tests.multinode import eventually, make_home, running


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Node, Node]]:
    """Alice and her friend Bob."""
    a_home, b_home = await make_home(tmp_path, "Alice"), await make_home(tmp_path, "Bob")
    async with running(a_home) as alice, running(b_home) as bob:
        link, _ = await alice.pairing_link()
        await bob.wait_pairing((await bob.pair(link)).id, timeout=10)
        await eventually(lambda: alice.friends(), what="Alice to know Bob")
        yield alice, bob


async def test_post_comment_react_and_read_the_feed(pair: tuple[Node, Node]) -> None:
    alice, _ = pair
    family = await alice.moments.create_circle("family", ["Bob"], members_can_post=True)
    assert [m.name for m in alice.moments.circles()] == ["family"]
    assert family.is_member(pair[1].identity.public.verify_key)
    moment = await alice.moments.post("Family", "the two-year-old with the ice cream")
    await alice.moments.comment(_text(moment.id), "so sweet")
    await alice.moments.react(_text(moment.id), "❤️")
    feed = await alice.moments.feed(None, None, 50)
    assert len(feed) == 1
    item = feed[0]
    assert item["text"] == "the two-year-old with the ice cream"
    assert item["circle"]["name"] == "family"
    assert item["author"]["name"] == "Alice"
    assert [c["text"] for c in item["comments"]] == ["so sweet"]
    assert item["reactions"] == {"❤️": ["Alice"]}
    assert (await alice.store.run(Store.counts)).moments == 1


def _text(raw: bytes) -> str:
    from p2pmoments.moments import moment_text

    return moment_text(raw)


async def test_a_moment_can_be_found_by_a_prefix_of_its_id(pair: tuple[Node, Node]) -> None:
    alice, _ = pair
    await alice.moments.create_circle("family", [], members_can_post=False)
    moment = await alice.moments.post("family", "hello")
    found = await alice.moments.get(_text(moment.id)[:10])
    assert found["text"] == "hello"
    with pytest.raises(NotFoundError):
        await alice.moments.get("zzzzzzzz")


async def test_retraction_deletes_the_content_and_leaves_a_marker(pair: tuple[Node, Node]) -> None:
    alice, _ = pair
    await alice.moments.create_circle("work", [], members_can_post=False)
    moment = await alice.moments.post("work", "launch at 9")
    await alice.moments.comment(_text(moment.id), "typo")
    await alice.moments.retract(_text(moment.id))
    item = await alice.moments.get(_text(moment.id))
    assert item["retracted"] is True
    assert item["text"] == ""
    assert item["comments"] == []
    rows = await alice.store.run(Store.moment_rows, moment_id=moment.id, now=0)
    assert rows[0][9] == b""  # the envelope itself is gone from disk
    with pytest.raises(NotFoundError, match="retracted"):
        await alice.moments.comment(_text(moment.id), "too late")


async def test_an_expired_moment_is_deleted_and_never_shown(pair: tuple[Node, Node]) -> None:
    alice, _ = pair
    await alice.moments.create_circle("pub", [], members_can_post=False)
    moment = await alice.moments.post("pub", "tonight only", expires_in=1)
    assert len(await alice.moments.feed("pub", None, 10)) == 1
    await eventually(lambda: time.time() > moment.content.expires, timeout=5)  # type: ignore[operator]
    assert await alice.moments.feed("pub", None, 10) == []
    assert await alice.moments.expire() == 1
    assert await alice.store.run(Store.moment_rows, moment_id=moment.id, now=0) == []


async def test_changing_a_circle_starts_a_new_epoch_without_the_removed(
    pair: tuple[Node, Node],
) -> None:
    alice, bob = pair
    circle = await alice.moments.create_circle("family", ["Bob"], members_can_post=True)
    changed = await alice.moments.change_circle("family", remove=["Bob"])
    assert changed.epoch == circle.epoch + 1
    assert not changed.is_member(bob.identity.public.verify_key)
    from p2pmoments.core.manifest import epoch_key

    with pytest.raises(RejectedError):
        epoch_key(changed, bob.identity)
    renamed = await alice.moments.change_circle(
        "family", name="family & co", members_can_post=False
    )
    assert (renamed.name, renamed.members_can_post, renamed.epoch) == ("family & co", False, 2)


async def test_receiving_keeps_good_moments_and_records_why_bad_ones_are_dropped(
    pair: tuple[Node, Node],
) -> None:
    alice, bob = pair
    circle = await alice.moments.create_circle("family", ["Bob"], members_can_post=False)
    key = alice.moments.key_for(circle)
    # Bob (a member) comments on Alice's post: accepted.
    post = await alice.moments.post("family", "hi")
    comment = seal_moment(
        bob.identity,
        circle,
        key,
        seq=1,
        time=int(time.time()),
        content=Content(kind=Kind.COMMENT, text="hey", reply_to=post.id),
    )
    assert await alice.moments.receive(comment.envelope, None) is not None
    # Bob's post in an owner-only circle: refused with the reason on record.
    import dataclasses

    posting = dataclasses.replace(circle, members_can_post=True)
    bad = seal_moment(
        bob.identity, posting, key, seq=2, time=1, content=Content(kind=Kind.POST, text="mine")
    )
    assert await alice.moments.receive(bad.envelope, None) is None
    assert await alice.moments.receive(b"junk", None) is None
    reasons = [
        r[0]
        for r in await alice.store.run(
            lambda s: list(s._conn.execute("SELECT reason FROM rejected ORDER BY id"))
        )
    ]
    assert reasons[0] == "only the owner may post in this circle"
    assert reasons[1].startswith("too large or malformed envelope")


async def test_names_and_rules(pair: tuple[Node, Node]) -> None:
    alice, _ = pair
    await alice.moments.create_circle("family", [], members_can_post=False)
    with pytest.raises(DecodeError, match="already have a circle"):
        await alice.moments.create_circle("Family", [], members_can_post=False)
    with pytest.raises(NotFoundError):
        await alice.moments.post("nope", "x")
    with pytest.raises(NotFoundError):
        await alice.moments.create_circle("other", ["Nobody"], members_can_post=False)
    with pytest.raises(DecodeError, match="needs some text"):
        await alice.moments.post("family", "   ")


async def test_only_the_owner_changes_a_circle_and_only_the_author_retracts(
    pair: tuple[Node, Node],
) -> None:
    alice, bob = pair
    circle = await alice.moments.create_circle("family", ["Bob"], members_can_post=True)
    # Bob learns the manifest (as sync will bring it) and holds the circle too.
    await bob.moments.save(circle, "circle.created")
    with pytest.raises(NotOwnerError, match="only its owner"):
        await bob.moments.change_circle("family", name="mine now")
    mine = await alice.moments.post("family", "from Alice")
    # Their link may have brought it already (then receive says it is not new).
    await bob.moments.receive(mine.envelope, None)
    assert (await bob.moments.get(_text(mine.id)))["text"] == "from Alice"
    with pytest.raises(NotOwnerError, match="only its author"):
        await bob.moments.retract(_text(mine.id))


async def test_an_ambiguous_circle_name_lists_the_candidates(pair: tuple[Node, Node]) -> None:
    alice, bob = pair
    await alice.moments.create_circle("family", [], members_can_post=False)
    theirs = await bob.moments.create_circle("family", ["Alice"], members_can_post=False)
    await alice.moments.save(theirs, "circle.created")
    with pytest.raises(AmbiguousError, match="could be any of"):
        alice.moments.resolve_circle("family")
