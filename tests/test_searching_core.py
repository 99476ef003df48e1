"""Searching for chunks a peer lacked, bounded (core/replication/chunks.py, spec/sync.md
section 4, point 6): a hostile member's index naming thousands of chunks that exist
nowhere costs the other members a bounded number of requests at once, less and less
often, and never holds back another author's chunks."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from p2pmoments.core.replication.chunks import SEARCHING, ChunkScheduler
from p2pmoments.core.replication.messages import WantChunks
from p2pmoments.core.replication.vectors import Send

ANN, BEN, CAT, HOSTILE, HONEST = (bytes([i]) * 32 for i in range(1, 6))
CIRCLE = bytes([9]) * 32
NAMES = 2000  # chunks a hostile index names, held by no one


def asked(sends: Sequence[Send]) -> list[tuple[bytes, bytes]]:
    """(peer, chunk) of every chunk these messages ask for."""
    out = []
    for send in sends:
        assert isinstance(send.message, WantChunks)
        out += [(send.peer, a) for a in send.message.addresses]
    return out


def scheduler() -> ChunkScheduler:
    chunks = ChunkScheduler(lambda peer, circle, epoch: True)
    for peer in (ANN, BEN, CAT):
        chunks.link_up(peer)
    return chunks


def answer_lacking(chunks: ChunkScheduler, sends: list[Send], rounds: int = 10_000) -> int:
    """Every peer says it lacks everything it is asked, until nothing more is asked;
    returns how many chunk requests went out, and checks that no more than SEARCHING
    chunks were ever searched for at once."""
    pending = asked(sends)
    total = len(pending)
    for _ in range(rounds):
        if not pending:
            return total
        assert chunks.statistics()["chunks_searching"] <= 256  # SEARCHING
        peer, address = pending.pop(0)
        more = asked(chunks.lacked(peer, [address]))
        total += len(more)
        pending += more
    raise AssertionError("still asking")


def test_chunks_no_one_holds_are_searched_for_a_bounded_number_at_once() -> None:
    chunks = scheduler()
    names = [i.to_bytes(32, "big") for i in range(NAMES)]
    first = chunks.need(b"m" * 32, CIRCLE, 0, NAMES, names, ANN, author=HOSTILE)
    assert {p for p, _ in asked(first)} == {ANN}  # its sender first
    # Ann, its sender, lacks every one: at most 256 are asked of the others at once.
    from_ann = [a for _, a in asked(first)]
    others: list[Send] = []
    while from_ann:
        sends = chunks.lacked(ANN, [from_ann.pop(0)])
        from_ann += [a for p, a in asked(sends) if p == ANN]
        others += [s for s in sends if s.peer != ANN]
    stats = chunks.statistics()
    assert stats["chunks_searching"] == 256  # SEARCHING
    assert stats["chunks_waiting"] == NAMES - 256
    # Ben and Cat lack them too: each asked of each once, no more, then given up.
    assert answer_lacking(chunks, others) == 2 * NAMES
    stats = chunks.statistics()
    assert stats["chunks_searching"] == stats["chunks_waiting"] == 0
    assert stats["chunks_given_up"] == NAMES


def test_a_chunk_no_one_holds_is_asked_again_less_and_less_often() -> None:
    chunks = scheduler()
    address = b"x" * 32
    sends = chunks.need(b"m" * 32, CIRCLE, 0, 1, [address], ANN, author=HOSTILE)
    asks_at: list[float] = []
    now = 0.0
    answer_lacking(chunks, sends)
    while now < 600:
        now += 1.0
        again = chunks.retry_lacked(now)
        if again:
            asks_at.append(now)
            answer_lacking(chunks, again)
    # The first rounds at once (a relay may be fetching it), then 1, 2, 4 ... s apart:
    # about a dozen times in ten minutes, not six hundred.
    assert asks_at[:2] == [1.0, 2.0]
    assert len(asks_at) <= 12
    gaps = [b - a for a, b in itertools.pairwise(asks_at)]
    assert gaps == sorted(gaps)


def test_another_authors_chunks_are_searched_for_in_turn_not_after_a_flood() -> None:
    chunks = scheduler()
    names = [i.to_bytes(32, "big") for i in range(NAMES)]
    flood = chunks.need(b"h" * 32, CIRCLE, 0, NAMES, names, ANN, author=HOSTILE)
    # Ann lacks the first few hundred of the hostile names: the searches fill up.
    from_ann = [a for p, a in asked(flood) if p == ANN]
    searching: list[tuple[bytes, bytes]] = []
    for _ in range(SEARCHING + 50):
        sends = chunks.lacked(ANN, [from_ann.pop(0)])
        from_ann += [a for p, a in asked(sends) if p == ANN]
        searching += [(p, a) for p, a in asked(sends) if p != ANN]
    assert chunks.statistics()["chunks_searching"] == SEARCHING
    assert chunks.statistics()["chunks_waiting"] == 50
    # An honest post's photo, sent by Ben, who has just lost it (a cut): it waits its
    # author's turn, which comes at the next search that ends, before the flood's.
    photo = b"p" * 32
    chunks.need(b"q" * 32, CIRCLE, 0, 1, [photo], BEN, author=HONEST)
    chunks.lacked(BEN, [photo])  # Ben lacks it: a search, waiting its turn
    assert photo not in chunks._searching
    ended = 0
    for peer, address in searching:  # hostile names' searches end: lacked by all
        freed = chunks.lacked(peer, [address])
        other = next(p for p, a in asked(freed) if a == address)
        freed = chunks.lacked(other, [address])
        ended += 1
        if photo in chunks._searching:  # asked of Ann or Cat (queued behind what each has)
            break
    # Its author's turn came at once (after the one author waiting before it), not
    # after the fifty hostile names waiting.
    assert ended <= 2
    assert chunks.statistics()["chunks_waiting"] >= 48
