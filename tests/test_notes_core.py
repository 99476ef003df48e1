"""The notes' pure core (spec/notes.md): concurrent edits converge in any order with
duplicates; hostile updates are refused with RejectedError only."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pmoments.core.errors import RejectedError
from p2pmoments.core.moment import Content, Kind, open_moment, seal_moment
from p2pmoments.core.notes import (
    MAX_UPDATE,
    NoteDoc,
    check_update,
    diff,
    join_parts,
    snapshot_digest,
    split_parts,
)

TEXT = st.text(alphabet=st.sampled_from("ab\né😀 "), max_size=12)
# One member's edit: from which of its own earlier versions, and the text it writes there.
EDIT = st.tuples(st.integers(0, 2), st.integers(0, 40), st.integers(0, 4), TEXT)


@settings(max_examples=60, deadline=None)
@given(
    edits=st.lists(EDIT, max_size=12),
    order=st.randoms(use_true_random=False),
    duplicates=st.lists(st.integers(0, 200), max_size=10),
)
def test_three_members_concurrent_edits_converge_in_any_order_with_duplicates(
    edits: list[tuple[int, int, int, str]], order: object, duplicates: list[int]
) -> None:
    start = NoteDoc()
    first = start.write("t", "hello world")
    members = [NoteDoc(start.state()) for _ in range(3)]
    sent: list[bytes] = list(first)
    for who, at, delete, insert in edits:
        doc = members[who]
        text = doc.text
        at = min(at, len(text))
        sent += doc.write(None, text[:at] + insert + text[at + delete :])
    # Every member receives every update (its own too), shuffled, some twice.
    for doc in members:
        mail = sent + [sent[d % len(sent)] for d in duplicates]
        order.shuffle(mail)  # type: ignore[attr-defined]
        for update in mail:
            doc.apply(update)
    assert members[0].text == members[1].text == members[2].text
    assert members[0].title == "t"


# Few examples: each refusal is a panic in Yrs, slow to unwind (a backtrace is printed
# where RUST_BACKTRACE is set).
@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=300))
def test_a_hostile_update_is_refused_or_harmless_never_a_crash(data: bytes) -> None:
    doc = NoteDoc()
    doc.write("t", "text")
    try:
        check_update(data)
    except RejectedError:
        return
    doc.apply(data)  # what the check let through applies
    assert isinstance(doc.text, str)


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=1, max_size=200), st.integers(0, 3))
def test_an_edit_with_flipped_bytes_is_refused_or_applies(data: bytes, at: int) -> None:
    doc = NoteDoc()
    [update] = doc.write(None, "some words")
    broken = bytearray(update)
    broken[at % len(broken)] ^= data[0]
    other = NoteDoc()
    with contextlib.suppress(RejectedError):
        other.apply(bytes(broken))


def test_an_oversized_update_is_refused() -> None:
    with pytest.raises(RejectedError, match="bytes"):
        check_update(b"\x00" * (MAX_UPDATE + 1))


def test_a_large_paste_is_split_into_updates_that_fit_and_merge() -> None:
    doc = NoteDoc()
    paste = "é" * 300_000  # 600 KB
    updates = doc.write("t", paste)
    assert len(updates) > 10
    assert all(len(u) <= MAX_UPDATE for u in updates)
    other = NoteDoc()
    for update in reversed(updates):
        other.apply(update)
    assert other.text == paste


@given(TEXT, TEXT)
def test_diff_turns_one_text_into_the_other(old: str, new: str) -> None:
    text = old
    for change in reversed(diff(old, new)):
        text = text[: change.at] + change.insert + text[change.at + change.delete :]
    assert text == new


def test_a_snapshot_travels_in_parts_and_only_whole_and_true_is_used() -> None:
    doc = NoteDoc()
    doc.write("t", "x" * 200_000)
    state = doc.state()
    parts = split_parts(state)
    digest = snapshot_digest(state)
    got = dict(enumerate(parts))
    assert join_parts(got, len(parts), digest) == state
    assert join_parts({0: parts[0]}, len(parts), digest) is None
    assert join_parts({**got, 0: b"x" + parts[0][1:]}, len(parts), digest) is None
    assert NoteDoc(state).text == doc.text


@settings(max_examples=150, deadline=None)
@given(TEXT, TEXT, TEXT)
def test_writing_from_an_old_version_lands_after_what_came_since(
    base_text: str, since: str, written: str
) -> None:
    base = NoteDoc()
    base.write("t", base_text)
    here = NoteDoc(base.state())
    came = here.write(None, since)  # someone else's edit, merged here since
    updates = here.write(None, written, base=NoteDoc(base.state()))
    other = NoteDoc(base.state())
    for update in came + updates:
        other.apply(update)
    assert other.text == here.text
    if base_text == since:  # nothing came since: exactly what was written
        assert here.text == written


# --- notes' moments (spec/notes.md §2-3) ----------------------------------------------


def _sealed(content: Content, can_post: bool = True) -> tuple[bytes, object, object]:
    from tests.test_manifest_and_moment import ALICE, BOB, manifest, opener, reader

    m, key = manifest(BOB, can_post=can_post)
    moment = seal_moment(BOB, m, key, seq=1, time=1, content=content)
    return moment.envelope, reader(m), opener(ALICE)


def test_a_note_and_its_edit_travel_as_moments_and_open() -> None:
    doc = NoteDoc()
    [first, edit] = doc.write("Plan", "text")
    envelope, manifests, keys = _sealed(Content(kind=Kind.NOTE, update=first))
    note = open_moment(envelope, manifests, keys)  # type: ignore[arg-type]
    assert note.content.update == first
    envelope, manifests, keys = _sealed(Content(kind=Kind.NOTE_EDIT, reply_to=note.id, update=edit))
    assert open_moment(envelope, manifests, keys).content.update == edit  # type: ignore[arg-type]


def test_a_member_who_may_not_post_may_not_write_notes() -> None:
    [first, _] = NoteDoc().write("Plan", "text")
    with pytest.raises(RejectedError, match="only the owner"):
        _sealed(Content(kind=Kind.NOTE, update=first), can_post=False)


@settings(max_examples=20, deadline=None)
@given(st.binary(min_size=1, max_size=200))
def test_a_hostile_update_in_a_signed_moment_is_refused_when_opened(garbage: bytes) -> None:
    try:
        check_update(garbage)
    except RejectedError:
        pass
    else:
        return  # pycrdt takes it: not hostile
    with _unchecked():
        envelope, manifests, keys = _sealed(
            Content(kind=Kind.NOTE_EDIT, reply_to=bytes(32), update=garbage)
        )
    with pytest.raises(RejectedError, match="malformed note update"):
        open_moment(envelope, manifests, keys)  # type: ignore[arg-type]


@contextlib.contextmanager
def _unchecked() -> Iterator[None]:
    """A hostile member's daemon: it seals updates without checking them."""
    from p2pmoments.core import notes

    real = notes.check_update
    notes.check_update = lambda update: None
    try:
        yield
    finally:
        notes.check_update = real


PART_FIELD = st.one_of(st.binary(max_size=80), st.lists(st.integers(), max_size=5))


@settings(max_examples=200, deadline=None)
@given(PART_FIELD, st.integers(0, 2))
def test_a_hostile_snapshot_part_is_refused_with_its_own_error(raw: object, which: int) -> None:
    from p2pmoments.core.moment import _read_part

    shapes = ([raw, 1, bytes(32), []], raw, [0, 1, bytes(32), [raw]])
    with contextlib.suppress(RejectedError):
        _read_part(shapes[which])
