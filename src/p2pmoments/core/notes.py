"""Notes written together (spec/notes.md): a note's document is a Yrs (Yjs) CRDT with two
texts, its title and its text; edits are Yjs updates that members sign and relay as
moments. Pure: no I/O and no clock; pycrdt is the CRDT.

Peer updates are hostile: `check_update` bounds one and applies it to a scratch document
first, so a malformed one is refused (RejectedError) before it can touch a note.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from p2pmoments.core.errors import RejectedError

if TYPE_CHECKING:
    from pycrdt import Doc, Text


def _pycrdt() -> Any:
    """pycrdt, imported when first used: its package loads anyio (for its network
    providers, which we do not use), and the core must load nothing of the kind when
    imported (tests/test_purity.py); the CRDT itself does no I/O."""
    import pycrdt

    return pycrdt


__all__ = [
    "HISTORY_GAP",
    "MAX_NOTES",
    "MAX_NOTE_TEXT",
    "MAX_TITLE",
    "MAX_UPDATE",
    "PART",
    "Change",
    "Group",
    "NoteDoc",
    "check_update",
    "covers",
    "diff",
    "group_history",
    "join_parts",
    "snapshot_digest",
    "split_parts",
]

MAX_NOTE_TEXT = 1 << 20  # bytes of UTF-8 in a note's text
MAX_TITLE = 200  # bytes of UTF-8 in its title
# One update: what fits in a moment's envelope (64 KiB, moments.md §2) with its header,
# signature and content fields around it. A larger paste is split into several.
MAX_UPDATE = 60 * 1024
PIECE = 16 * 1024  # bytes of text inserted by one update at most (an update of a piece < 17 KiB)
PART = 48 * 1024  # bytes of a snapshot carried by one moment (and its authors: 10 KiB)
MAX_PARTS = 32  # a snapshot in more parts is refused (MAX_NOTE_TEXT and tombstones fit)
MAX_NOTES = 200  # notes in one circle
HISTORY_GAP = 300  # seconds: one author's edits closer than this are one version
UNSURE = 64  # updates kept to apply again (NoteDoc.apply)
LINE_DIFF = 4096  # characters: a changed middle longer than this is diffed by lines
_TITLE, _TEXT = "title", "text"


def _bad_update(exc: BaseException) -> bool:
    """Whether pycrdt refused an update (an Exception, or a Rust panic, which pyo3 raises
    as PanicException, a BaseException): never let one reach the daemon's loop."""
    return isinstance(exc, Exception) or type(exc).__name__ == "PanicException"


def check_update(update: bytes) -> None:
    """RejectedError unless `update` is one Yjs update of at most MAX_UPDATE bytes that
    pycrdt applies to an empty document without error."""
    if type(update) is not bytes or not 0 < len(update) <= MAX_UPDATE:
        raise RejectedError(f"a note's update is 1 to {MAX_UPDATE} bytes")
    scratch: Doc[Any] = _pycrdt().Doc()
    try:
        scratch.apply_update(update)
    except BaseException as exc:
        if not _bad_update(exc):
            raise
        raise RejectedError("malformed note update") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """Replace `delete` characters at `at` (Python string positions) with `insert`."""

    at: int
    delete: int
    insert: str


def diff(old: str, new: str) -> list[Change]:
    """Changes that turn `old` into `new`, in ascending order, none overlapping: the
    common start and end kept, and a long changed middle diffed by lines so that an edit
    made elsewhere in it by someone else survives the merge."""
    if old == new:
        return []
    start = _common(old, new, len(old), len(new), 1)
    end = _common(old, new, len(old) - start, len(new) - start, -1)
    a, b = old[start : len(old) - end], new[start : len(new) - end]
    if max(len(a), len(b)) <= LINE_DIFF or "\n" not in a:
        return [Change(at=start, delete=len(a), insert=b)]
    old_lines, new_lines = a.splitlines(keepends=True), b.splitlines(keepends=True)
    offsets = [0]
    for line in old_lines:
        offsets.append(offsets[-1] + len(line))
    changes = []
    matcher = difflib.SequenceMatcher(None, old_lines, new_lines, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op != "equal":
            changes.append(
                Change(
                    at=start + offsets[i1],
                    delete=offsets[i2] - offsets[i1],
                    insert="".join(new_lines[j1:j2]),
                )
            )
    return changes


def _common(old: str, new: str, most_old: int, most_new: int, way: int) -> int:
    """How many characters `old` and `new` share at their start (way 1) or end (way -1),
    at most the shorter of `most_old` and `most_new`: by halving, each comparison of
    slices in C (a note is up to a million characters, typed into a key at a time)."""
    low, high = 0, min(most_old, most_new)
    while low < high:
        mid = (low + high + 1) // 2
        same = old[:mid] == new[:mid] if way > 0 else old[-mid:] == new[-mid:]
        if same:
            low = mid
        else:
            high = mid - 1
    return low


class NoteDoc:
    """One note's document: its title and text, and the updates that change them."""

    def __init__(self, state: bytes = b"") -> None:
        crdt = _pycrdt()
        self._doc: Doc[Any] = crdt.Doc()
        self._title: Text = self._doc.get(_TITLE, type=crdt.Text)
        self._text: Text = self._doc.get(_TEXT, type=crdt.Text)
        self._unsure: list[bytes] = []  # updates that changed nothing when they came
        if state:
            self.apply(state)

    @property
    def title(self) -> str:
        """The title as merged so far."""
        return str(self._title)

    @property
    def text(self) -> str:
        """The text as merged so far."""
        return str(self._text)

    def apply(self, update: bytes) -> None:
        """Merge an update (any order, duplicates harmless); RejectedError if pycrdt
        refuses it, the document then unchanged.

        Yrs loses a deletion that arrives before what it deletes when more arrives later
        (found by tests/test_notes_core.py): an update that changed nothing here is kept
        (up to UNSURE of them) and applied again whenever another one brings something
        new; applying one twice changes nothing."""
        before = self._doc.get_state()
        self._merge(update)
        if self._doc.get_state() == before:
            self._unsure.append(update)
            del self._unsure[:-UNSURE]
            return
        for _ in range(UNSURE):  # each pass that brings something new may free more
            vector = self._doc.get_state()
            for waiting in self._unsure:
                self._merge(waiting)
            if self._doc.get_state() == vector:
                return

    def _merge(self, update: bytes) -> None:
        try:
            self._doc.apply_update(update)
        except BaseException as exc:
            if not _bad_update(exc):
                raise
            raise RejectedError("malformed note update") from None

    def state(self) -> bytes:
        """The whole document re-encoded: the compact form (spec/notes.md §5)."""
        return self._doc.get_update()

    def state_vector(self) -> bytes:
        """What this document holds, as a Yjs state vector."""
        return self._doc.get_state()

    def write(
        self, title: str | None, text: str | None, base: NoteDoc | None = None
    ) -> list[bytes]:
        """Change the title and text to these (None: unchanged) as edits that merge with
        others'; returns the updates, each at most MAX_UPDATE bytes (a long insertion is
        split). `base` is the document the new title and text were written from (what
        the writer saw): the changes are found against it and land where they belong
        here, after edits this document merged since (Yjs sticky indexes). The caller
        checks the bounds."""
        updates: list[bytes] = []
        for name, new in ((_TITLE, title), (_TEXT, text)):
            source = base if base is not None else self
            old = source.title if name == _TITLE else source.text
            if new is None or new == old:
                continue
            spans = _byte_spans(old, diff(old, new))
            if base is not None:
                spans = self._moved(base, name, spans)
            updates += self._apply(self._title if name == _TITLE else self._text, spans)
        return updates

    def _moved(
        self, base: NoteDoc, name: str, spans: list[tuple[int, int, str]]
    ) -> list[tuple[int, int, str]]:
        """Spans found in `base`, moved to where they now are in this document."""
        source = base._title if name == _TITLE else base._text
        here = self._title if name == _TITLE else self._text
        size = len(str(source).encode())
        moved = []
        for start, end, insert in spans:
            first = _anchored(source, here, start, size, after=True)
            last = first if end == start else _anchored(source, here, end, size, after=False)
            moved.append((first, max(first, last), insert))
        return sorted(moved, key=lambda s: s[0])

    def _apply(self, target: Text, spans: Sequence[tuple[int, int, str]]) -> list[bytes]:
        """Replace each (start, end) of UTF-8 byte positions, from the last, with its text."""
        updates = []
        for start, end, insert in reversed(spans):
            before = self._doc.get_state()
            if end > start:
                del target[start:end]
            at = start
            pieces = list(_pieces(insert)) or [""]
            for n, piece in enumerate(pieces):
                if n:
                    before = self._doc.get_state()
                if piece:
                    target.insert(at, piece)
                    at += len(piece.encode())
                updates.append(self._doc.get_update(before))
        empty = _pycrdt().Doc().get_update()
        return [u for u in updates if u and u != empty]


def _anchored(source: Text, here: Text, index: int, size: int, *, after: bool) -> int:
    """Where position `index` of `source` (UTF-8 bytes, of `size`) is now in `here`: bound
    to the character after it (`after`) or before it, as a Yjs sticky index. The ends
    of the text are the ends of `here` (Yrs anchors them to the text itself, and pycrdt
    panics resolving that)."""
    here_text = str(here).encode()
    if index <= 0:
        return 0
    if index >= size:
        return len(here_text)
    crdt = _pycrdt()
    assoc = crdt.Assoc.AFTER if after else crdt.Assoc.BEFORE
    try:
        sticky = source.sticky_index(index, assoc)
        found = int(crdt.StickyIndex.decode(sticky.encode(), here).get_index())
    except BaseException as exc:
        if not _bad_update(exc):
            raise
        found = index  # its nearest character boundary here, below
    found = max(0, min(found, len(here_text)))
    while 0 < found < len(here_text) and here_text[found] & 0xC0 == 0x80:
        found -= 1
    return found


def _byte_spans(text: str, changes: Sequence[Change]) -> list[tuple[int, int, str]]:
    """Changes as (start, end, insert) in UTF-8 bytes, which is how pycrdt counts."""
    spans = []
    for change in changes:
        start = len(text[: change.at].encode())
        end = start + len(text[change.at : change.at + change.delete].encode())
        spans.append((start, end, change.insert))
    return spans


def _pieces(text: str) -> Iterable[str]:
    """`text` in pieces of at most PIECE bytes of UTF-8, never splitting a character."""
    data = text.encode()
    start = 0
    while start < len(data):
        end = min(len(data), start + PIECE)
        while end < len(data) and data[end] & 0xC0 == 0x80:  # inside a character
            end -= 1
        yield data[start:end].decode()
        start = end


def covers(state: bytes, updates: Iterable[bytes]) -> bool:
    """Whether the document `state` already holds every one of `updates` (so their
    moments may be dropped once a snapshot of it is held: spec/notes.md §5): applied to
    it, they change neither what it holds nor what it says."""
    doc = NoteDoc(state)
    vector, title, text = doc.state_vector(), doc.title, doc.text
    try:
        for update in updates:
            doc.apply(update)
    except RejectedError:
        return False
    return doc.state_vector() == vector and doc.title == title and doc.text == text


def snapshot_digest(state: bytes) -> bytes:
    """The id of a snapshot: the hash of the whole re-encoded document."""
    return hashlib.blake2b(state, digest_size=32, person=b"p2pm-note-snap").digest()


def split_parts(state: bytes) -> list[bytes]:
    """A snapshot in parts of at most PART bytes, one for each moment."""
    parts = [state[i : i + PART] for i in range(0, len(state), PART)] or [b""]
    if len(parts) > MAX_PARTS:
        raise RejectedError(f"a note's snapshot is over {MAX_PARTS * PART} bytes")
    return parts


def join_parts(parts: dict[int, bytes], count: int, digest: bytes) -> bytes | None:
    """The snapshot, once all `count` parts are here and their whole has `digest`; None
    until then, or if the parts do not make it (its author's fault: nothing is kept)."""
    if len(parts) < count or any(i not in parts for i in range(count)):
        return None
    state = b"".join(parts[i] for i in range(count))
    return state if snapshot_digest(state) == digest else None


@dataclass(frozen=True, slots=True, kw_only=True)
class Group:
    """One version in a note's history: one author's edits with no pause over
    HISTORY_GAP seconds between them."""

    author: bytes
    first: int
    last: int
    edits: int


def group_history(edits: Iterable[tuple[bytes, int]]) -> list[Group]:
    """(author, time) of edits in the order they were applied, grouped into versions."""
    groups: list[Group] = []
    for author, time in edits:
        last = groups[-1] if groups else None
        if last is not None and last.author == author and 0 <= time - last.last <= HISTORY_GAP:
            groups[-1] = Group(
                author=author, first=last.first, last=max(last.last, time), edits=last.edits + 1
            )
        else:
            groups.append(Group(author=author, first=time, last=time, edits=1))
    return groups
