"""Storing a batch of moments (store/moments.py): which were new, and the feed's order."""

from __future__ import annotations

import os
from pathlib import Path

from p2pmoments.core.moment import Kind
from p2pmoments.store import NewMoment, Store

CIRCLE, AUTHOR = b"c" * 32, b"a" * 32
SECOND = 1_700_000_000


def moment(seq: int, created: int = SECOND, moment_id: bytes | None = None) -> NewMoment:
    return NewMoment(
        moment_id=moment_id or bytes([seq % 256]) * 31 + bytes([seq // 256]),
        circle_id=CIRCLE,
        author=AUTHOR,
        seq=seq,
        epoch=0,
        created=created,
        kind=Kind.POST,
        reply_to=None,
        expires=None,
        envelope=os.urandom(300),
        chunks=(),
    )


def test_a_batch_says_which_were_new_and_one_authors_second_reads_in_posting_order(
    tmp_path: Path,
) -> None:
    store = Store.open(tmp_path / "db.sqlite")
    try:
        # A relay brings 3 and 4 first, then 1, 2 and 5 with 3 again and another "4".
        assert store.add_moments([moment(3), moment(4)]) == [True, True]
        late = [moment(1), moment(2), moment(5), moment(3), moment(4, moment_id=b"x" * 32)]
        assert store.add_moments(late) == [True, True, True, False, False]
        posts = store.posts(now=SECOND + 10, circle_id=CIRCLE, limit=50)
        assert [p.seq for p in posts] == [5, 4, 3, 2, 1]
        # Hundreds at once (a catch-up), each in a second of its own, the same one twice.
        many = [moment(seq, SECOND + seq) for seq in range(6, 306)]
        assert store.add_moments([*many, many[0]]) == [True] * 300 + [False]
        posts = store.posts(now=SECOND + 1000, circle_id=CIRCLE, limit=400)
        assert [p.seq for p in posts] == list(range(305, 0, -1))
    finally:
        store.close()
