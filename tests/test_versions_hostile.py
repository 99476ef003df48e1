"""Hostile version records (spec/moments.md section 9): a member's record that follows
another file, answers no post, names too many parents or forges its author is refused
by every other member and counted as junk against the peer that sent it; any content
of a version decodes or is refused, never crashes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pmoments.core import wire
from p2pmoments.core.blobs import BlobKind, encrypt_blob
from p2pmoments.core.crypto import random_bytes, xaead_encrypt
from p2pmoments.core.errors import RejectedError
from p2pmoments.core.identity import Identity
from p2pmoments.core.manifest import Manifest
from p2pmoments.core.moment import MOMENT_CONTEXT, Kind, open_moment
from p2pmoments.core.replication.messages import T_MOMENTS
from p2pmoments.node import Node
from tests.multinode import befriend, eventually, make_home, running
from tests.test_manifest_and_moment import ALICE, BOB, manifest, opener, reader


def seal_raw(author: Identity, m: Manifest, key: bytes, seq: int, fields: dict[int, Any]) -> bytes:
    """An envelope signed by `author` around any content fields (seal_moment checks what
    it seals: a hostile member's daemon would not)."""
    nonce = random_bytes(24)
    header = {
        1: 1,
        2: m.circle_id,
        3: m.epoch,
        4: bytes(author.public.verify_key),
        5: seq,
        6: 1_800_000_000,
        7: nonce,
    }
    ciphertext = xaead_encrypt(key, nonce, wire.encode_map(header), wire.encode_map(fields))
    body = wire.encode_map({**header, 8: ciphertext})
    return wire.encode_map({1: body, 2: author.signing_key.sign(MOMENT_CONTEXT + body)})


FILE_REF = encrypt_blob(b"a version", kind=BlobKind.FILE, media_type="x/y", name="b.xlsx")[
    0
].as_map()


def version_fields(author: bytes, root: bytes, parents: Any) -> dict[int, Any]:
    return {1: author, 2: int(Kind.VERSION), 4: root, 8: [FILE_REF], 9: parents}


async def rejections(node: Node) -> list[tuple[str, bytes | None]]:
    def read(store: Any) -> list[tuple[str, bytes | None]]:
        return list(store._conn.execute("SELECT reason, sender FROM rejected ORDER BY id"))

    return await node.store.run(read)


async def test_hostile_version_records_are_refused_and_counted_as_junk(tmp_path: Path) -> None:
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob")]
    async with running(homes[0]) as alice, running(homes[1]) as bob:
        await befriend(alice, bob)
        work = await alice.circles.create("work", ["Bob"], members_can_post=True)
        await eventually(lambda: bob.circles.all(), what="Bob's manifest")
        budget = await alice.posting.post("work", "", files=[("budget.xlsx", b"1", "x/y")])
        other = await alice.posting.post("work", "", files=[("other.xlsx", b"2", "x/y")])
        comment = await alice.posting.comment(_text(budget.id), "nice")
        key = alice.circles.key_for(work)
        me = bytes(bob.identity.public.verify_key)
        junk_before = _junk(alice, me)
        envelopes = [
            # follows another file's version 1
            seal_raw(bob.identity, work, key, 50, version_fields(me, budget.id, [other.id])),
            # answers a comment, not a post
            seal_raw(bob.identity, work, key, 51, version_fields(me, comment.id, [comment.id])),
            # too many parents
            seal_raw(
                bob.identity,
                work,
                key,
                52,
                version_fields(me, budget.id, [os.urandom(32) for _ in range(9)]),
            ),
            # its content names Alice as author, its signature is Bob's
            seal_raw(
                bob.identity,
                work,
                key,
                53,
                version_fields(bytes(alice.identity.public.verify_key), budget.id, [budget.id]),
            ),
            # no parents at all
            seal_raw(bob.identity, work, key, 54, version_fields(me, budget.id, [])),
        ]
        # A parent never seen may be on its way (relays deliver in any order): kept,
        # not shown, not junk; a cycle cannot be made (ids hash their parents) and one
        # claimed never places (tests/test_versions_core.py).
        waiting = seal_raw(
            bob.identity, work, key, 55, version_fields(me, budget.id, [os.urandom(32)])
        )
        alice_key = bytes(alice.identity.public.verify_key)
        assert bob.links.send(
            alice_key, {0: T_MOMENTS, 1: work.circle_id, 2: [*envelopes, waiting]}
        )

        async def refused() -> bool:
            return len([r for r in await rejections(alice) if r[1] == me]) == len(envelopes)

        await eventually_async(alice, refused)
        reasons = [r for r, sender in await rejections(alice) if sender == me]
        assert any("another file" in r for r in reasons)
        assert any("names another author" in r for r in reasons)
        assert _junk(alice, me) >= junk_before + len(envelopes)
        # None of them is a version of the file; Bob's link stays (a few junk points).

        async def kept_waiting() -> bool:
            shown = await alice.versions.listing(_text(budget.id))
            return len(shown.history.order) == 1 and len(shown.history.pending) == 1

        await eventually_async(alice, kept_waiting)
        assert alice_key in bob.links.linked()


def _junk(node: Node, peer: bytes) -> float:
    state = node.replication.engine._peers.get(peer)
    return 0.0 if state is None else state.junk._score


def _text(raw: bytes) -> str:
    from p2pmoments.views import moment_text

    return moment_text(raw)


async def eventually_async(node: Node, check: Any) -> None:
    from tests.test_versions import wait_for

    await wait_for(node, check, "the records to be refused")


M, M_KEY = manifest(ALICE, BOB)
ROOT = os.urandom(32)


@settings(max_examples=60, deadline=None)
@given(
    parents=st.one_of(
        st.lists(st.binary(min_size=30, max_size=34), max_size=10),
        st.integers(-(2**63), 2**63 - 1),
        st.text(max_size=5),
        st.none(),
    ),
    text=st.one_of(st.text(max_size=20), st.binary(max_size=5)),
    blobs=st.one_of(
        st.just([FILE_REF]),
        st.just([FILE_REF, FILE_REF]),
        st.just([]),
        st.lists(
            st.dictionaries(st.integers(0, 13), st.integers(0, 2**40), max_size=4), max_size=2
        ),
    ),
    expires=st.one_of(st.none(), st.integers(0, 2**40)),
)
def test_any_version_content_opens_or_is_refused_never_crashes(
    parents: Any, text: Any, blobs: Any, expires: Any
) -> None:
    fields: dict[int, Any] = {1: bytes(BOB.public.verify_key), 2: int(Kind.VERSION), 4: ROOT}
    for key, value in ((3, text), (7, expires), (8, blobs), (9, parents)):
        if value is not None:
            fields[key] = value
    envelope = seal_raw(BOB, M, M_KEY, 1, fields)
    try:
        moment = open_moment(envelope, reader(M), opener(ALICE))
    except RejectedError:
        return
    content = moment.content
    assert content.kind is Kind.VERSION
    assert 1 <= len(content.parents) <= 8
    assert len(content.blobs) == 1
    assert content.blobs[0].kind is BlobKind.FILE
