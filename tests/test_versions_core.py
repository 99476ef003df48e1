"""The pure core of files with versions (core/versions.py, spec/moments.md section 9):
every member draws the same graph from the same records, whatever the order and the
duplicates; hostile records are never placed; a new version's unchanged chunks are
borrowed, not made again; borrowed-chunk references decode only as they should."""

from __future__ import annotations

import os
import random
from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pmoments.core.blobs import (
    BIG_CHUNK_SIZE,
    BlobKind,
    BlobRef,
    decode_ref,
    decrypt_blob,
    encrypt_blob,
    open_index_piece,
)
from p2pmoments.core.errors import DecodeError
from p2pmoments.core.moment import Kind
from p2pmoments.core.replication.rules import Context, Entry, judge
from p2pmoments.core.replication.vectors import Membership
from p2pmoments.core.versions import KEEP, MAX_VERSIONS, Version, VersionEncoder, history, refusal

ROOT = Version(id=b"\x00" * 32, parents=(), author=b"A" * 32, time=1000)
MEMBERS = [b"A" * 32, b"B" * 32, b"C" * 32]


def _id(n: int) -> bytes:
    return n.to_bytes(32, "big")


@st.composite
def graphs(draw: st.DrawFn) -> list[Version]:
    """Versions made by three members, each following one or more versions that member
    had seen (a merge names several), at times their clocks gave (any order)."""
    count = draw(st.integers(0, 30))
    made: list[Version] = []
    for n in range(1, count + 1):
        seen = [ROOT, *made]
        parents = draw(
            st.lists(st.sampled_from(seen), min_size=1, max_size=3, unique_by=lambda v: v.id)
        )
        made.append(
            Version(
                id=_id(n),
                parents=tuple(p.id for p in parents),
                author=draw(st.sampled_from(MEMBERS)),
                time=draw(st.integers(900, 1100)),
            )
        )
    return made


@st.composite
def hostile(draw: st.DrawFn) -> list[Version]:
    """Records no member should place: a cycle, a parent never made, itself as parent."""
    a, b, c = _id(10_001), _id(10_002), _id(10_003)
    pool = [
        Version(id=a, parents=(b,), author=MEMBERS[1], time=1),
        Version(id=b, parents=(a,), author=MEMBERS[1], time=1),  # a cycle of two
        Version(id=c, parents=(_id(99_999),), author=MEMBERS[2], time=1),  # never made
        Version(id=_id(10_004), parents=(_id(10_004),), author=MEMBERS[2], time=1),
        Version(id=_id(10_005), parents=(ROOT.id, c), author=MEMBERS[0], time=1),
    ]
    return draw(st.lists(st.sampled_from(pool), max_size=5))


@settings(max_examples=80, deadline=None)
@given(graphs(), hostile(), st.randoms(use_true_random=False))
def test_every_member_draws_the_same_graph_whatever_the_order_and_duplicates(
    made: list[Version], bad: list[Version], rnd: random.Random
) -> None:
    records = made + bad
    shuffled = records + rnd.sample(records, k=len(records) // 2)  # duplicates
    rnd.shuffle(shuffled)
    one, other = history(ROOT, records), history(ROOT, shuffled)
    assert one == other
    placed = set(one.order)
    # Every record made honestly is placed, no hostile one ever is.
    assert placed == {ROOT.id, *(v.id for v in made)}
    assert set(one.pending) == {v.id for v in bad}
    # The order is topological: every parent before its version; the root first.
    assert one.order[0] == ROOT.id
    where = {i: n for n, i in enumerate(one.order)}
    for v in made:
        assert all(where[p] < where[v.id] for p in v.parents)
    # The heads are the versions nobody follows; siblings only when there are several.
    followed = {p for v in made for p in v.parents}
    assert set(one.heads) == placed - followed
    assert one.newest == one.heads[0]
    assert one.siblings == (one.heads if len(one.heads) > 1 else ())
    # Dropped: never a head, never one of the newest KEEP; all the others.
    assert set(one.dropped) == placed - set(one.heads) - set(one.order[-KEEP:])


@settings(max_examples=40, deadline=None)
@given(graphs())
def test_a_version_following_every_head_resolves_the_siblings(made: list[Version]) -> None:
    before = history(ROOT, made)
    merge = Version(id=_id(5000), parents=before.heads, author=MEMBERS[0], time=0)
    after = history(ROOT, [*made, merge])
    assert after.heads == (merge.id,)
    assert after.siblings == ()
    assert after.number(merge.id) == len(after.order)  # the newest, whatever its clock


def test_refusal_names_what_is_wrong_with_a_version_record() -> None:
    root, other = _id(1), _id(2)
    files = {root: root, other: other, _id(3): root, _id(4): b""}
    assert refusal(root, [root, _id(3)], files, 0) is None
    assert refusal(root, [_id(77)], files, 0) is None  # not here yet: it waits
    assert refusal(root, [other], files, 0) == "a version follows versions of another file"
    assert refusal(root, [_id(4)], files, 0) == "a version follows versions of another file"
    assert refusal(_id(3), [root], files, 0) is not None  # answers a version, not a post
    assert refusal(root, [root], files, MAX_VERSIONS) is not None


def _chunks_of(ref: BlobRef, chunks: dict[bytes, bytes]) -> list[bytes]:
    return [a for p, i in enumerate(ref.index) for a in open_index_piece(ref, p, chunks[i])]


def _read(ref: BlobRef, chunks: dict[bytes, bytes]) -> bytes:
    addresses = _chunks_of(ref, chunks)
    return b"".join(decrypt_blob(ref, [chunks[a] for a in addresses], addresses))


def _version(parent: BlobRef, chunks: dict[bytes, bytes], data: bytes) -> tuple[BlobRef, int]:
    """A new version of `data` after `parent`: its reference, and how many chunks (index
    pieces included) it made; `chunks` gains them."""
    encoder = VersionEncoder(parent, _chunks_of(parent, chunks))
    made = encoder.feed(data)
    ref, last = encoder.finish(kind=BlobKind.FILE, media_type="x/y", name="budget.xlsx")
    chunks.update(made + last)
    return ref, len(made + last)


def test_a_new_version_borrows_its_unchanged_chunks_and_reads_back_whole() -> None:
    first = os.urandom(12 * BIG_CHUNK_SIZE + 1000)  # 13 chunks
    ref1, made = encrypt_blob(first, kind=BlobKind.FILE, media_type="x/y", name="budget.xlsx")
    chunks = dict(made)
    second = first[:100] + b"changed" + first[107:]  # one chunk changes
    ref2, count = _version(ref1, chunks, second)
    assert count == 2  # that chunk and the index piece
    assert _read(ref2, chunks) == second
    assert _read(ref1, chunks) == first
    # A third version borrows from both keys: the first's chunks and the second's.
    third = second[:-10] + b"0123456789"
    ref3, count = _version(ref2, chunks, third)
    assert count == 2
    assert {k for _, _, k in ref3.borrowed} == {ref1.key, ref2.key}
    assert _read(ref3, chunks) == third
    assert decode_ref(ref3.as_map()) == ref3  # it travels as it is
    # An insertion shifts every chunk after it: fixed-size chunks are then all new.
    _, count = _version(ref3, chunks, b"!" + third)
    assert count == 14


def test_a_version_of_a_small_file_is_made_whole() -> None:
    first = os.urandom(1000)
    ref1, _ = encrypt_blob(first, kind=BlobKind.FILE, media_type="x/y")
    encoder = VersionEncoder(ref1, [])
    assert encoder.feed(first + b"!") == []
    ref2, last = encoder.finish(kind=BlobKind.FILE, media_type="x/y")
    assert not ref2.borrowed
    assert b"".join(decrypt_blob(ref2, [c for _, c in last])) == first + b"!"


def _big_ref() -> BlobRef:
    ref, _ = encrypt_blob(os.urandom(8 * BIG_CHUNK_SIZE + 5), kind=BlobKind.FILE, media_type="x/y")
    return ref


BIG = _big_ref()  # 9 chunks


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.none(),
        st.integers(),
        st.lists(
            st.one_of(
                st.lists(
                    st.one_of(
                        st.binary(min_size=32, max_size=32),
                        st.lists(st.integers(-3, 12), max_size=8),
                        st.integers(),
                    ),
                    max_size=3,
                ),
                st.binary(max_size=40),
            ),
            max_size=18,
        ),
    )
)
def test_a_borrowed_chunks_field_decodes_or_is_refused_cleanly(field: Any) -> None:
    fields = {**BIG.as_map(), 12: field}
    try:
        ref = decode_ref(fields)
    except DecodeError:
        return
    runs = sorted(ref.borrowed)
    for n, (first, count, key) in enumerate(runs):
        assert first >= 0
        assert count > 0
        assert first + count <= 9
        assert key != BIG.key
        assert n + 1 == len(runs) or runs[n + 1][0] >= first + count
    for index in range(9):
        assert len(ref.key_at(index)) == 32


def test_a_first_form_blob_borrows_nothing() -> None:
    ref, _ = encrypt_blob(b"small", kind=BlobKind.FILE, media_type="x/y")
    with_runs = replace(BIG, borrowed=((0, 1, os.urandom(32)),)).as_map()
    assert decode_ref(with_runs).borrowed
    try:
        decode_ref({**ref.as_map(), 12: with_runs[12]})
    except DecodeError:
        return
    raise AssertionError("a first-form reference borrowed chunks")


CIRCLE = b"c" * 32
PEER = MEMBERS[1]


def _entry(moment: bytes, kind: Kind, reply_to: bytes | None, parents: tuple[bytes, ...]) -> Entry:
    return Entry(moment, CIRCLE, PEER, 1, 0, kind, reply_to, None, (), 100, parents)


@settings(max_examples=150, deadline=None)
@given(
    held=st.dictionaries(
        st.integers(0, 7).map(_id),
        st.sampled_from([Kind.POST, Kind.COMMENT, Kind.VERSION]),
        max_size=8,
    ),
    root=st.integers(0, 9).map(_id),
    parents=st.lists(st.integers(0, 9).map(_id), min_size=1, max_size=4, unique=True),
    count=st.integers(0, MAX_VERSIONS + 2),
)
def test_a_received_version_is_kept_only_if_it_follows_its_own_file(
    held: dict[bytes, Kind], root: bytes, parents: list[bytes], count: int
) -> None:
    """Any version record a peer sends, against any moments held: kept if and only if its
    root is a post (or not here), every parent held is its root or a version of it, and
    the file has room; refused ones count against the peer (the rules' verdict)."""
    files = {
        i: (i if k is Kind.POST else root if k is Kind.VERSION and i != root else b"")
        for i, k in held.items()
    }
    owners = {i: (CIRCLE, PEER) for i in held}
    ctx = Context(
        sender=None,
        circle=CIRCLE,
        membership=Membership(latest=0, members={0: frozenset({PEER})}),
        owners=owners,
        files=files,
        versions={root: count},
    )
    entry = _entry(_id(99), Kind.VERSION, root, tuple(parents))
    verdict = judge([entry], ctx)
    good = (
        files.get(root, root) == root
        and all(files.get(p, root) == root for p in parents)
        and count < MAX_VERSIONS
    )
    assert (verdict.accepted == [entry]) == good
    assert len(verdict.rejected) == (0 if good else 1)
