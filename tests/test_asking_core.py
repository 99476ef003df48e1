"""Asking one peer at a time (core/replication/vectors.py, spec/sync.md section 4, point 8):
in a mesh every neighbour announces the same moment; we ask one of them for it, the next
only if the first goes or does not answer in time."""

from __future__ import annotations

from p2pmoments.core.replication.chunks import ChunkScheduler
from p2pmoments.core.replication.messages import Have, WantChunks
from p2pmoments.core.replication.vectors import (
    ASK_PATIENCE,
    Action,
    Membership,
    Send,
    VectorSync,
)

ME, ANN, BEN, CAT, AUTHOR = (bytes([i]) * 32 for i in range(1, 6))
CIRCLE = bytes([9]) * 32


def sync(*linked: bytes) -> VectorSync:
    vectors = VectorSync(ME)
    vectors.set_circle(
        CIRCLE, Membership(latest=0, members={0: frozenset({ME, ANN, BEN, CAT, AUTHOR})})
    )
    for peer in linked:
        vectors.link_up(peer)
    return vectors


def ahead(seq: int = 3) -> Have:
    return Have(circle=CIRCLE, vector={(AUTHOR, 0): seq}, epochs=frozenset({0}))


def asked(actions: list[Action]) -> list[bytes]:
    """The peers our have went to (a have to a peer ahead of us asks it)."""
    return [a.peer for a in actions if isinstance(a, Send) and isinstance(a.message, Have)]


def test_a_moment_announced_by_three_neighbours_is_asked_of_the_first_only() -> None:
    vectors = sync(ANN, BEN, CAT)
    assert asked(vectors.received_have(ANN, ahead(), 10.0)) == [ANN]
    assert asked(vectors.received_have(BEN, ahead(), 10.1)) == []
    assert asked(vectors.received_have(CAT, ahead(), 10.2)) == []
    # Ann answers: we hold it, and ask no one else. The have Ann gets back acknowledges what
    # she sent (spec/sync.md section 4, point 4): it names all she has, so it asks her nothing.
    acks = vectors.stored(CIRCLE, [(AUTHOR, s, 0) for s in (1, 2, 3)], ANN)
    assert asked(acks) == [ANN]
    assert [a.message.vector for a in acks if isinstance(a, Send)] == [{(AUTHOR, 0): 3}]
    assert asked(vectors.tick(10.0 + ASK_PATIENCE)) == []


def test_the_next_neighbour_is_asked_when_the_first_goes_or_keeps_silent() -> None:
    vectors = sync(ANN, BEN, CAT)
    vectors.received_have(ANN, ahead(), 10.0)
    vectors.received_have(BEN, ahead(), 10.1)
    vectors.received_have(CAT, ahead(), 10.2)
    assert asked(vectors.link_down(ANN)) == [BEN]
    assert asked(vectors.tick(10.0 + ASK_PATIENCE / 2)) == []
    assert asked(vectors.tick(11.0 + ASK_PATIENCE)) == [CAT]  # Ben said nothing


def test_a_neighbours_have_waits_for_the_author_linked_with_us_but_not_for_ever() -> None:
    vectors = sync(ANN, AUTHOR)
    assert asked(vectors.received_have(ANN, ahead(), 10.0)) == []  # the author pushes
    assert asked(vectors.tick(10.0 + ASK_PATIENCE)) == [ANN]


def test_a_neighbour_that_is_not_a_mesh_link_announces_nothing_and_is_not_waited_for() -> None:
    mesh = {ANN}  # the author is linked (a friend) but not a mesh link of the circle
    vectors = VectorSync(ME, eager=lambda peer, circle: peer in mesh)
    vectors.set_circle(CIRCLE, Membership(latest=0, members={0: frozenset({ME, ANN, AUTHOR})}))
    vectors.link_up(ANN)
    vectors.link_up(AUTHOR)
    assert asked(vectors.received_have(ANN, ahead(), 10.0)) == [ANN]
    # A moment of Cat's that we store is announced to Ann, not over the friend link.
    assert asked(vectors.stored(CIRCLE, [(CAT, 1, 0)], CAT)) == [ANN]


def test_what_no_one_sends_is_asked_of_each_peer_once_not_for_ever() -> None:
    # Ann and Ben claim moments they no longer hold (expired there): each is asked once.
    vectors = sync(ANN, BEN)
    asks = asked(vectors.received_have(ANN, ahead(), 10.0))
    asks += asked(vectors.received_have(BEN, ahead(), 10.1))
    for second in range(1, 60):
        asks += asked(vectors.tick(10.0 + second))
    assert asks == [ANN, BEN]
    # Ben claims more later: it is asked again.
    assert asked(vectors.received_have(BEN, ahead(4), 70.0)) == [BEN]


def test_a_chunk_every_neighbour_lacked_is_asked_again_once_they_may_have_it() -> None:
    # A moment travels ahead of its chunks: the neighbours that passed it on lack them
    # for a while. They are asked again, not left until the next link-up.
    chunks = ChunkScheduler(lambda peer, circle, epoch: True)
    chunks.link_up(ANN)
    chunks.link_up(BEN)
    address, moment = bytes([0xC0]) * 32, bytes([0xA0]) * 32
    first = chunks.need(moment, CIRCLE, 0, 1, [address], ANN)
    assert [s.peer for s in first] == [ANN]
    assert [s.peer for s in chunks.lacked(ANN, [address])] == [BEN]
    assert chunks.lacked(BEN, [address]) == []  # no one else: it waits
    again = chunks.retry_lacked()
    assert len(again) == 1
    assert isinstance(again[0].message, WantChunks)
    assert again[0].message.addresses == (address,)
