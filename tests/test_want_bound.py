"""A have's wants (spec/sync.md section 4, point 11) cannot make a member send a range
again and again: each slot at most once in WANT_AGAIN seconds (issue 22, item 5)."""

from __future__ import annotations

from p2pmoments.core.replication.engine import SendRange
from p2pmoments.core.replication.messages import Have
from p2pmoments.core.replication.vectors import WANT_AGAIN
from tests.test_lost_pushes import ALICE, BOB, CIRCLE, linked_world, seqs


def test_a_burst_of_haves_wanting_a_range_again_gets_it_once_then_once_more_later() -> None:
    world = linked_world(frozenset({ALICE, BOB}))
    for _ in range(3):
        world.post(ALICE, CIRCLE)
    world.run()
    assert seqs(world, BOB) == [1, 2, 3]
    alice = world.nodes[ALICE].engine
    wants = Have(
        circle=CIRCLE, vector={(ALICE, 0): 3}, epochs=frozenset({0}), wants=((ALICE, 0, 1),)
    )

    def ranges(now: float) -> list[tuple[int, int]]:
        actions = alice.receive(BOB, wants, now)
        return [(a.first, a.last) for a in actions if isinstance(a, SendRange)]

    # Before the bound, each of these 100 haves (4 KB sent) made Alice read and queue the
    # whole range again: 100 copies of everything she wrote.
    sent = [r for i in range(100) for r in ranges(100.0 + i * 0.01)]
    assert sent == [(1, 3)]
    assert ranges(100.0 + WANT_AGAIN) == [(1, 3)]  # an honest peer asking again is served
