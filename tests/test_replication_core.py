"""The replication core's parts in memory: messages, the rules table, the engine's checks."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pmoments.core.errors import DecodeError
from p2pmoments.core.moment import Kind
from p2pmoments.core.replication import messages
from p2pmoments.core.replication.engine import (
    Delivered,
    Drop,
    KnownManifest,
    KnownRemoval,
    LeaveCircle,
    Open,
    Reject,
    Replicator,
    Send,
)
from p2pmoments.core.replication.messages import (
    BadMessage,
    Chunk,
    Have,
    Manifests,
    Moments,
    Removed,
    WantChunks,
)
from p2pmoments.core.replication.rules import Context, Entry, judge
from p2pmoments.core.replication.vectors import Membership

ME, BOB, EVE = (bytes([i]) * 32 for i in (1, 2, 3))
CIRCLE, OTHER = bytes([7]) * 32, bytes([8]) * 32
ids = st.binary(min_size=32, max_size=32)

message_values = st.one_of(
    st.builds(
        lambda m: Manifests(manifests=tuple(m)), st.lists(st.binary(max_size=40), max_size=5)
    ),
    st.builds(
        lambda c, v, e: Have(circle=c, vector=v, epochs=frozenset(e)),
        ids,
        st.dictionaries(
            st.tuples(ids, st.integers(0, 2**32 - 1)), st.integers(0, 2**63 - 1), max_size=4
        ),
        st.lists(st.integers(0, 2**32 - 1), max_size=5),
    ),
    st.builds(
        lambda c, e: Moments(circle=c, envelopes=tuple(e)),
        ids,
        st.lists(st.binary(max_size=40), max_size=5),
    ),
    st.builds(lambda a: WantChunks(addresses=tuple(a)), st.lists(ids, max_size=16)),
    st.builds(
        lambda a, d: Chunk(address=a, data=d), ids, st.one_of(st.none(), st.binary(max_size=40))
    ),
    st.builds(lambda n: Removed(notices=tuple(n)), st.lists(st.binary(max_size=40), max_size=5)),
)


@given(message=message_values)
def test_every_message_decodes_to_what_was_encoded(message: messages.Message) -> None:
    assert messages.decode(messages.encode(message)) == message


@settings(max_examples=300)
@given(
    body=st.dictionaries(
        st.integers(0, 3),
        st.one_of(
            st.integers(-5, 30),
            st.binary(max_size=40),
            st.lists(
                st.one_of(
                    st.binary(max_size=33), st.integers(-2, 5), st.lists(st.integers(), max_size=4)
                ),
                max_size=20,
            ),
            st.none(),
            st.text(max_size=5),
        ),
    )
)
def test_hostile_bodies_raise_bad_message_and_nothing_else(body: dict[int, Any]) -> None:
    with contextlib.suppress(BadMessage):
        messages.decode(body)


@pytest.mark.parametrize(
    ("body", "junk"),
    [
        ({0: 19, 1: [b"x" * 32] * 17}, 1),  # more chunk requests than allowed at once
        ({0: 20, 1: b"short"}, 4),  # a malformed chunk counts more
        ({0: 20, 1: b"a" * 32, 2: b"x" * (512 * 1024 + 17)}, 4),  # longer than any chunk
        ({0: 17, 1: CIRCLE, 2: [[ME, -1, 3]]}, 1),  # a negative epoch
        ({0: 17, 1: CIRCLE, 2: [], 3: [2**32]}, 1),  # an epoch over 32 bits
        ({0: 18, 1: CIRCLE, 2: [b"ok", 5]}, 1),  # an envelope that is not bytes
        ({0: 99}, 1),
    ],
)
def test_malformed_messages_are_junk_of_their_weight(body: dict[int, Any], junk: float) -> None:
    with pytest.raises(BadMessage) as caught:
        messages.decode(body)
    assert caught.value.junk == junk


def entry(
    seq: int = 1,
    *,
    circle: bytes = CIRCLE,
    author: bytes = BOB,
    kind: Kind = Kind.POST,
    reply_to: bytes | None = None,
    target: bytes | None = None,
) -> Entry:
    return Entry(
        id=bytes([seq]) * 32,
        circle=circle,
        author=author,
        seq=seq,
        epoch=0,
        kind=kind,
        reply_to=reply_to,
        target=target,
        chunks=(),
        size=100 + seq,
    )


MEMBERS = Membership(latest=0, members={0: frozenset({ME, BOB, EVE})})


def context(**changes: Any) -> Context:
    base: dict[str, Any] = {"sender": BOB, "circle": CIRCLE, "membership": MEMBERS, "owners": {}}
    return Context(**{**base, **changes})


def test_the_rules_table_keeps_good_moments_and_says_why_it_refuses_others() -> None:
    post = entry(1)
    elsewhere = entry(2, circle=OTHER)
    answers_elsewhere = entry(3, kind=Kind.COMMENT, reply_to=b"o" * 32)
    eves_retraction = entry(4, author=EVE, kind=Kind.RETRACTION, target=post.id)
    own_retraction = entry(5, kind=Kind.RETRACTION, target=post.id)
    verdicts = judge(
        [post, elsewhere, answers_elsewhere, eves_retraction, own_retraction],
        context(owners={b"o" * 32: (OTHER, BOB)}),
    )
    assert verdicts.accepted == [post, own_retraction]
    assert verdicts.rejected == [
        ("a moment of another circle than its message", elsewhere.size),
        ("it answers a moment of another circle", answers_elsewhere.size),
        ("only its author can retract a moment", eves_retraction.size),
    ]


def test_nothing_is_kept_from_a_sender_outside_the_latest_manifest() -> None:
    later = Membership(latest=1, members={0: frozenset({ME, BOB}), 1: frozenset({ME})})
    verdicts = judge([entry(1)], context(membership=later))
    assert verdicts.accepted == []
    assert verdicts.rejected == [("its sender is not in the circle's latest manifest", 101)]


def make_engine() -> Replicator:
    def verify_manifest(raw: bytes) -> KnownManifest:
        if raw == b"bad":
            raise DecodeError("forged")
        return KnownManifest(
            circle=raw[:32], epoch=raw[32], owner=ME, members=frozenset({ME, BOB}), raw=raw
        )

    def verify_removal(raw: bytes) -> KnownRemoval:
        if raw == b"bad":
            raise DecodeError("forged")
        return KnownRemoval(
            circle=raw[:32], epoch=raw[32], member=ME, owner=raw[33:65], time=5, raw=raw
        )

    return Replicator(ME, verify_manifest=verify_manifest, verify_removal=verify_removal)


def test_moments_from_a_non_member_are_not_even_opened() -> None:
    engine = make_engine()
    engine.add_manifest(
        KnownManifest(circle=CIRCLE, epoch=0, owner=ME, members=frozenset({ME, BOB}), raw=b"m")
    )
    engine.link_up(BOB)
    engine.link_up(EVE)
    envelopes = (b"e1", b"e2")
    assert engine.receive(EVE, Moments(circle=CIRCLE, envelopes=envelopes), 0.0) == []
    assert engine.receive(BOB, Moments(circle=CIRCLE, envelopes=envelopes), 0.0) == [
        Open(BOB, CIRCLE, envelopes)
    ]


def test_junk_past_the_limit_drops_the_peer_once() -> None:
    engine = make_engine()
    engine.link_up(EVE)
    actions = []
    for _ in range(100):
        actions += engine.receive(EVE, Chunk(address=b"a" * 32, data=b"junk"), 0.0)
    drops = [a for a in actions if isinstance(a, Drop)]
    assert len(drops) == 1
    assert "a chunk we did not ask for" in drops[0].reason


def test_forged_manifests_count_as_junk_and_good_ones_are_passed_on() -> None:
    engine = make_engine()
    engine.link_up(BOB)
    raw = CIRCLE + bytes([0])
    actions = engine.receive(BOB, Manifests(manifests=(b"bad", raw)), 0.0)
    kept = [a for a in actions if not isinstance(a, Send)]
    assert [type(a).__name__ for a in kept] == ["KeepManifest"]
    assert engine.membership(CIRCLE) is not None
    assert engine.receive(BOB, Manifests(manifests=(raw,)), 0.0) == []  # held already


def test_a_removal_from_the_owner_is_followed_and_any_other_is_not() -> None:
    owner = bytes([9]) * 32
    engine = make_engine()
    engine.add_manifest(
        KnownManifest(circle=CIRCLE, epoch=0, owner=owner, members=frozenset({ME, BOB}), raw=b"m")
    )
    engine.link_up(BOB)
    forged = CIRCLE + bytes([1]) + EVE  # "signed" by Eve, not the owner
    assert engine.receive(BOB, Removed(notices=(forged,)), 0.0) == []
    real = CIRCLE + bytes([1]) + owner
    (left,) = engine.receive(BOB, Removed(notices=(real,)), 0.0)
    assert isinstance(left, LeaveCircle)
    assert not engine.may_read(BOB, CIRCLE, 0)  # we send nothing of it any more
    assert engine.receive(BOB, Moments(circle=CIRCLE, envelopes=(b"e",)), 0.0) == []


def test_rejections_are_recorded_and_counted() -> None:
    engine = make_engine()
    engine.add_manifest(
        KnownManifest(circle=CIRCLE, epoch=0, owner=ME, members=frozenset({ME, BOB}), raw=b"m")
    )
    engine.link_up(BOB)
    accepted, actions = engine.opened(
        BOB, CIRCLE, [entry(1), entry(2, circle=OTHER)], [("bad signature", 7)], {}, 0.0
    )
    assert accepted == [entry(1)]
    assert actions == [
        Reject(BOB, (("bad signature", 7), ("a moment of another circle than its message", 102)))
    ]


def test_a_big_file_keeps_32_mib_asked_of_a_peer_in_messages_any_member_reads() -> None:
    """Issue 22: 64 chunks of 512 KiB in flight (Syncthing's puller keeps 32 MiB
    outstanding), asked 16 a message, the most a want-chunks message may name, so a
    daemon of before reads every one; topped up one for one as chunks arrive."""
    from p2pmoments.core.replication.chunks import ChunkScheduler

    peer, moment, circle = b"p" * 32, b"m" * 32, b"c" * 32
    wanted = [i.to_bytes(32, "big") for i in range(200)]
    scheduler = ChunkScheduler(lambda who, c, e: True)
    scheduler.link_up(peer)
    sends = scheduler.need(moment, circle, 0, len(wanted), wanted, peer)
    asked = [a for s in sends for a in s.message.addresses]  # type: ignore[union-attr]
    assert asked == wanted[:64]
    for s in sends:
        assert s.peer == peer
        assert messages.decode(messages.encode(s.message)) == s.message
    more = scheduler.arrived(peer, asked[:3])
    assert [a for s in more for a in s.message.addresses] == wanted[64:67]  # type: ignore[union-attr]


def test_delivered_marks_come_from_members_haves_and_claim_no_more_than_we_posted() -> None:
    engine = make_engine()
    engine.add_manifest(
        KnownManifest(circle=CIRCLE, epoch=0, owner=ME, members=frozenset({ME, BOB}), raw=b"m")
    )
    engine.link_up(BOB)
    engine.link_up(EVE)
    engine.stored(CIRCLE, [_entry(seq) for seq in (1, 2, 3)], None)
    # Bob holds two of our three: delivered up to 2. Eve, no member, is not heard.
    have = Have(circle=CIRCLE, vector={(ME, 0): 2}, epochs=frozenset({0}))
    assert [a for a in engine.receive(BOB, have, 0.0) if isinstance(a, Delivered)] == [
        Delivered(BOB, CIRCLE, ((0, 2),))
    ]
    assert not [a for a in engine.receive(EVE, have, 0.0) if isinstance(a, Delivered)]
    # A member claiming epochs it is not in, or more than we posted, is held to the truth.
    boast = Have(
        circle=CIRCLE,
        vector={(ME, 0): 2**62, **{(ME, e): 5 for e in range(1, 500)}, (BOB, 0): 9},
        epochs=frozenset({0}),
    )
    assert [a for a in engine.receive(BOB, boast, 0.0) if isinstance(a, Delivered)] == [
        Delivered(BOB, CIRCLE, ((0, 3),))
    ]


def _entry(seq: int) -> Entry:
    return Entry(bytes([seq]) * 32, CIRCLE, ME, seq, 0, Kind.POST, None, None, (), 100)


def test_how_far_behind_a_members_have_says_we_are_counts_only_what_we_may_read() -> None:
    engine = make_engine()
    engine.add_manifest(
        KnownManifest(circle=CIRCLE, epoch=0, owner=ME, members=frozenset({ME, BOB}), raw=b"m")
    )
    engine.link_up(BOB)
    engine.link_up(EVE)
    engine.stored(CIRCLE, [_entry(seq) for seq in (1, 2, 3)], None)
    have = Have(
        circle=CIRCLE,
        # 7 of ours we lack, 500 of Bob's; an epoch we were never in counts for nothing.
        vector={(ME, 0): 10, (BOB, 0): 500, (BOB, 9): 2**62},
        epochs=frozenset({0}),
    )
    assert engine.behind(BOB, have) == 507
    assert engine.behind(EVE, have) == 0  # no member: a catch-up will not come from her
    assert engine.behind(BOB, Have(circle=OTHER, vector={(BOB, 0): 500}, epochs=frozenset())) == 0
