"""Notes written together (spec/notes.md): the daemon's side.

A note is the moment that made it (kind 6); its edits (kind 7) and snapshot parts (kind
8) are moments that answer it, so they are signed, encrypted for the circle and
replicated exactly as comments are. What a note says is its moments merged: each
note's document is kept re-encoded in the store (a cache, rebuilt from the moments if
lost), and caught up with the moments stored since whenever it is read or written.

A writer sends the text it wants and the version it wrote from (`base`, a token this
module gave it): the change is found against that version and lands where it belongs
after whatever was merged since, so two people typing at once both keep their words.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import pycrdt  # noqa: F401  (loaded here, at start, not on the loop: its import reads files)

from p2pmoments.circles import Circles
from p2pmoments.core import notes as core
from p2pmoments.core.errors import P2PMomentsError, RejectedError
from p2pmoments.core.ids import IdKind, decode_id
from p2pmoments.core.moment import Content, Kind, Moment, SnapshotPart
from p2pmoments.errors import NotFoundError, UserInputError
from p2pmoments.events import EventBus
from p2pmoments.moments import Moments
from p2pmoments.posting import Posting
from p2pmoments.store import AsyncStore, Store
from p2pmoments.store.notes import VersionRow
from p2pmoments.views import moment_text

__all__ = [
    "BASES",
    "COMPACT_EDITS",
    "EDITING",
    "NoteConflictError",
    "NoteState",
    "Notes",
    "Version",
]

log = logging.getLogger(__name__)

BASES = 32  # versions of each open note a writer may write from
COMPACT_EDITS = 1000  # a note's edits held beside its snapshot before we compact it
EDITING = 30.0  # seconds: someone who edited a note this recently is editing it now
SAVE_EVERY = 2.0  # seconds between writes of a note's document while it is edited
CATCH_UP = 2000  # moments merged at a time
VERSIONS = 100  # versions of a note kept


class NoteConflictError(P2PMomentsError):
    """The version written from is no longer known: read the note again."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Version:
    """One version of a note's history."""

    number: int
    author: bytes
    first: int
    last: int
    edits: int
    title: str
    chars: int


@dataclass(frozen=True, slots=True, kw_only=True)
class NoteState:
    """A note as merged so far."""

    id: bytes
    circle_id: bytes
    title: str
    text: str
    version: str  # the token to write from
    updated: int
    editing: tuple[bytes, ...]  # who edited it in the last EDITING seconds
    authors: tuple[bytes, ...]


@dataclass(slots=True)
class _Live:
    """An open note: its document and what it was merged from."""

    note_id: bytes
    circle_id: bytes
    doc: core.NoteDoc
    applied: int
    updated: int
    bases: OrderedDict[str, bytes] = field(default_factory=OrderedDict)
    editing: dict[bytes, float] = field(default_factory=dict)
    version: VersionRow | None = None  # the newest, still growing
    finished: list[VersionRow] = field(default_factory=list)  # ended, not yet saved
    own: int = 0  # our edits written here, already in the document and its version
    parts: dict[bytes, dict[int, bytes]] = field(default_factory=dict)
    # Edits merged since the note was opened, not yet dropped: (moment, author, seq, update).
    edits: list[tuple[bytes, bytes, int, bytes]] = field(default_factory=list)
    dropping: list[bytes] = field(default_factory=list)  # held by a snapshot: to drop
    saved: float = 0.0
    dirty: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def current(self) -> str:
        """The current version's token: what the document holds and says (cheap: its
        state vector and text, not the whole document re-encoded)."""
        digest = hashlib.blake2b(self.doc.state_vector(), digest_size=12)
        digest.update(f"{self.doc.title}\x00{self.doc.text}".encode())
        return digest.hexdigest()

    def token(self) -> str:
        """The current version's token, remembered as a base to write from."""
        token = self.current()
        if token not in self.bases:
            self.bases[token] = self.doc.state()
        self.bases.move_to_end(token)
        while len(self.bases) > BASES:
            self.bases.popitem(last=False)
        return token


class Notes:
    """The notes of every circle we are in."""

    def __init__(
        self,
        store: AsyncStore,
        moments: Moments,
        posting: Posting,
        circles: Circles,
        events: EventBus,
        person_of: Callable[[bytes], bytes] = lambda key: key,
    ) -> None:
        self._store = store
        self._moments = moments
        self._posting = posting
        self._circles = circles
        self._events = events
        self._person_of = person_of  # a device's person (moment authors are devices)
        self._open: dict[bytes, _Live] = {}

    # --- reading ------------------------------------------------------------------------

    async def of_circle(self, circle_ref: str) -> list[NoteState]:
        """Every note of a circle, oldest first."""
        circle = self._circles.resolve(circle_ref)
        ids = await self._store.run(Store.note_ids, circle.circle_id)
        return [await self.read(moment_text(i)) for i in ids]

    async def read(self, ref: str) -> NoteState:
        """One note as merged so far."""
        live = await self._live(ref)
        async with live.lock:
            await self._catch_up(live)
            return self._state(live)

    async def base_text(self, ref: str, base: str) -> str | None:
        """The text of version `base` of a note, if it is still one to write from."""
        live = await self._live(ref)
        async with live.lock:
            await self._catch_up(live)
            live.token()
            state = live.bases.get(base)
        return None if state is None else core.NoteDoc(state).text

    async def history(self, ref: str) -> list[Version]:
        """A note's versions, oldest first: one author's edits with no pause over
        core.HISTORY_GAP seconds each."""
        live = await self._live(ref)
        async with live.lock:
            await self._catch_up(live)
            await self._save(live, force=True)
        rows = await self._store.run(Store.note_versions, live.note_id, VERSIONS)
        out = []
        for number, author, first, last, edits, packed in rows:
            title, text = _unpack(packed)
            out.append(
                Version(
                    number=number,
                    author=author,
                    first=first,
                    last=last,
                    edits=edits,
                    title=title,
                    chars=len(text),
                )
            )
        return out

    async def sizes(self, ref: str) -> tuple[int, int, int]:
        """(moments held, their bytes, the stored document's bytes): what compaction saves."""
        live = await self._live(ref)
        async with live.lock:
            await self._catch_up(live)
            await self._save(live, force=True)
        return await self._store.run(Store.note_size, live.note_id)

    # --- writing ------------------------------------------------------------------------

    async def create(self, circle_ref: str, title: str, text: str) -> NoteState:
        """A new note in a circle."""
        manifest = self._circles.resolve(circle_ref)
        _check(title, text)
        held = await self._store.run(Store.note_ids, manifest.circle_id)
        if len(held) >= core.MAX_NOTES:
            raise UserInputError(f"a circle has at most {core.MAX_NOTES} notes")
        doc = core.NoteDoc()
        updates = doc.write(title, text)
        first = updates[0] if updates else doc.state()
        moment = await self._posting.publish(manifest, Content(kind=Kind.NOTE, update=first))
        rest = [Content(kind=Kind.NOTE_EDIT, reply_to=moment.id, update=u) for u in updates[1:]]
        await self._publish(manifest.circle_id, rest)
        return await self.read(moment_text(moment.id))

    async def write(
        self, ref: str, *, base: str | None, title: str | None, text: str | None
    ) -> NoteState:
        """Change a note's title and text to these, as written from version `base` (None:
        the current one); the change merges with others' made since."""
        live = await self._live(ref)
        async with live.lock:
            await self._catch_up(live)
            current = live.current()
            if base is not None and base not in live.bases:
                raise NoteConflictError("this note changed too much since: read it again")
            from_doc = None if base in (None, current) else core.NoteDoc(live.bases[base])
            source = from_doc or live.doc
            _check(source.title if title is None else title, source.text if text is None else text)
            grows = text is not None and len(text) > len(source.text)
            if grows and len(live.doc.text.encode()) > core.MAX_NOTE_TEXT:
                raise UserInputError(
                    f"this note's text is over {core.MAX_NOTE_TEXT} bytes: shorten it first"
                )
            # A version that ends here ends with the text as it was (_record).
            self._record(live, self._person_of(self._posting.me), int(time.time()))
            updates = live.doc.write(title, text, base=from_doc)
            live.own += len(updates)  # recorded above: not again when merged
            if updates:
                contents = [
                    Content(kind=Kind.NOTE_EDIT, reply_to=live.note_id, update=u) for u in updates
                ]
                # Already in our document: marked applied as they are stored.
                await self._publish(live.circle_id, contents)
                await self._catch_up(live)
                live.dirty = True
                await self._save(live)
                if len(live.edits) >= COMPACT_EDITS or await self._new_members(live):
                    await self._compact(live)
            return self._state(live)

    async def restore(self, ref: str, number: int) -> NoteState:
        """Make an earlier version the note's title and text again, as a new edit."""
        live = await self._live(ref)
        async with live.lock:
            await self._catch_up(live)
            await self._save(live, force=True)
        rows = await self._store.run(Store.note_versions, live.note_id, VERSIONS)
        found = [r for r in rows if r[0] == number]
        if not found:
            raise NotFoundError(f"this note has no version {number} (note history lists them)")
        title, text = _unpack(found[0][5])
        return await self.write(ref, base=None, title=title, text=text)

    async def aclose(self) -> None:
        """Write every open note's document; safe to call twice."""
        for live in list(self._open.values()):
            async with live.lock:
                await self._save(live, force=True)

    # --- internals ----------------------------------------------------------------------

    async def _publish(self, circle_id: bytes, contents: list[Content]) -> list[Moment]:
        manifest = self._circles.current(circle_id)
        if manifest is None:
            raise NotFoundError("this note's circle is gone from this device")
        return [await self._posting.publish(manifest, c) for c in contents]

    async def _live(self, ref: str) -> _Live:
        note_id = await self._note_id(ref)
        live = self._open.get(note_id)
        if live is not None:
            return live
        row = await self._store.run(Store.note, note_id)
        if row is None:
            first = await self._moments.row_of(note_id)
            snapshots = await self._store.run(Store.note_moments, note_id, 0, 1)
            held = first or (snapshots[0][1] if snapshots else None)
            circle_id = held.circle_id if held else b""
            if not circle_id or (first is not None and first.kind is not Kind.NOTE):
                raise NotFoundError(f"no note {ref!r}")
            live = _Live(note_id, circle_id, core.NoteDoc(), 0, 0)
        else:
            _, circle_id, state, applied, _, updated = row
            live = _Live(note_id, circle_id, core.NoteDoc(state), applied, updated)
            versions = await self._store.run(Store.note_versions, note_id, 1)
            live.version = versions[-1] if versions else None
        live.saved = time.monotonic()
        return self._open.setdefault(note_id, live)

    async def _note_id(self, ref: str) -> bytes:
        ref = ref.strip().lower()
        try:
            return decode_id(ref, IdKind.MOMENT)
        except ValueError:
            row = await self._moments.stored(ref)
            if row.kind in (Kind.NOTE_EDIT, Kind.NOTE_SNAPSHOT) and row.reply_to:
                return row.reply_to
            return row.moment_id

    async def _catch_up(self, live: _Live) -> None:
        """Merge the note's moments stored since we last looked."""
        for _ in range(10_000):  # bounded: CATCH_UP at a time
            rows = await self._store.run(Store.note_moments, live.note_id, live.applied, CATCH_UP)
            if not rows:
                return
            for rowid, row in rows:
                live.applied = rowid
                moment = self._moments._opened(row, remember=False)  # merged once
                if moment is None or moment.circle_id != live.circle_id:
                    continue
                self._merge(live, moment)
            live.dirty = True
            await self._drop(live)

    def _merge(self, live: _Live, moment: Moment) -> None:
        c = moment.content
        if c.update is None:
            return
        person = self._person_of(bytes(moment.author))
        if c.kind is Kind.NOTE_SNAPSHOT and c.part is not None:
            self._merge_part(live, moment, c.part, c.update)
            return
        if live.own and bytes(moment.author) == self._posting.me:
            live.own -= 1
        else:
            self._record(live, person, moment.time)
        try:
            live.doc.apply(c.update)
        except RejectedError:  # checked when it arrived: only a bug brings it here
            log.warning("a note's update did not apply: %s", moment_text(moment.id))
            return
        if c.kind is Kind.NOTE_EDIT:
            live.edits.append((moment.id, bytes(moment.author), moment.seq, c.update))
        live.updated = max(live.updated, moment.time)
        live.editing[person] = time.time()

    def _merge_part(self, live: _Live, moment: Moment, part: SnapshotPart, data: bytes) -> None:
        parts = live.parts.setdefault(part.digest, {})
        parts[part.index] = data
        state = core.join_parts(parts, part.count, part.digest)
        if state is None:
            return
        del live.parts[part.digest]
        self._record(live, self._person_of(bytes(moment.author)), moment.time)
        try:
            live.doc.apply(state)
        except RejectedError:
            log.warning("a note's snapshot did not apply: %s", moment_text(moment.id))
            return
        live.updated = max(live.updated, moment.time)
        # The edits it says it holds may go, once checked that it does (spec/notes.md §5).
        named = dict(part.covers)
        held = [e for e in live.edits if e[2] <= named.get(e[1], -1)]
        if held and core.covers(state, [e[3] for e in held]):
            live.dropping += [e[0] for e in held]
            live.edits = [e for e in live.edits if e not in held]

    def _record(self, live: _Live, person: bytes, when: int) -> None:
        """Count an edit about to be merged into the note's newest version, or end that
        one (with the text as it is now) and start another."""
        v = live.version
        if v is not None and v[1] == person and 0 <= when - v[3] <= core.HISTORY_GAP:
            live.version = (v[0], person, v[2], max(v[3], when), v[4] + 1, b"")
            return
        if v is not None:
            live.finished.append((v[0], v[1], v[2], v[3], v[4], _pack(live.doc)))
            live.dirty = True
        live.version = (-1, person, when, when, 1, b"")  # -1: numbered when saved

    async def _save(self, live: _Live, *, force: bool = False) -> None:
        """Write the note's document and newest version (at most every SAVE_EVERY
        seconds while it is being edited, unless forced)."""
        now = time.monotonic()
        if not live.dirty or (not force and now - live.saved < SAVE_EVERY):
            return
        versions = live.finished
        if live.version is not None:
            v = live.version
            versions.append((v[0], v[1], v[2], v[3], v[4], _pack(live.doc)))
        number = await self._store.run(Store.next_version_id)
        for n, v in enumerate(versions):
            if v[0] < 0:
                versions[n] = (number, *v[1:])
                number += 1
        live.finished = []
        live.version = versions[-1] if live.version is not None else None
        row = (
            live.note_id,
            live.circle_id,
            live.doc.state(),
            live.applied,
            live.doc.title,
            live.updated,
        )
        await self._store.run(Store.save_note, row, versions)
        await self._store.run(Store.trim_versions, live.note_id, VERSIONS)
        live.saved, live.dirty = now, False

    async def _new_members(self, live: _Live) -> bool:
        """Whether the circle has an epoch in which the whole note was never sent: its
        members since cannot read the moments before (moments.md §7), so the next edit
        sends a snapshot with it (spec/notes.md §5)."""
        manifest = self._circles.current(live.circle_id)
        if manifest is None:
            return False
        return bool(manifest.epoch > await self._store.run(Store.note_whole_epoch, live.note_id))

    async def _compact(self, live: _Live) -> None:
        """Post the note's document as a snapshot, then drop the edits it holds
        (spec/notes.md §5)."""
        state = live.doc.state()
        dropped = live.edits  # every one is merged into this very document
        authors: dict[bytes, int] = {}
        for _, author, seq, _ in dropped:
            authors[author] = max(authors.get(author, 0), seq)
        parts = core.split_parts(state)
        digest = core.snapshot_digest(state)
        covers = tuple(sorted(authors.items()))[:256]
        contents = [
            Content(
                kind=Kind.NOTE_SNAPSHOT,
                reply_to=live.note_id,
                update=data,
                part=SnapshotPart(index=i, count=len(parts), digest=digest, covers=covers),
            )
            for i, data in enumerate(parts)
        ]
        await self._publish(live.circle_id, contents)
        await self._catch_up(live)
        live.dirty = True
        await self._save(live, force=True)
        live.dropping += [moment_id for moment_id, *_ in dropped]
        live.edits = [e for e in live.edits if e not in dropped]
        await self._drop(live)

    async def _drop(self, live: _Live) -> None:
        """Drop the edits a snapshot we hold holds, once the document with them is saved."""
        if not live.dropping:
            return
        live.dirty = True
        await self._save(live, force=True)
        dropping, live.dropping = live.dropping, []
        freed = await self._store.run(Store.compact_note, live.note_id, dropping)
        log.info("note %s compacted: %d bytes freed", moment_text(live.note_id), freed)

    def _state(self, live: _Live) -> NoteState:
        now = time.time()
        editing = tuple(p for p, t in live.editing.items() if now - t <= EDITING)
        return NoteState(
            id=live.note_id,
            circle_id=live.circle_id,
            title=live.doc.title,
            text=live.doc.text,
            version=live.token(),
            updated=live.updated,
            editing=editing,
            authors=tuple(live.editing),
        )


def _check(title: str, text: str) -> None:
    if not title.strip():
        raise UserInputError("a note needs a title")
    if len(title.encode()) > core.MAX_TITLE or "\n" in title:
        raise UserInputError(f"a note's title is one line of at most {core.MAX_TITLE} bytes")
    if len(text.encode()) > core.MAX_NOTE_TEXT:
        raise UserInputError(f"a note's text is at most {core.MAX_NOTE_TEXT} bytes")


def _pack(doc: core.NoteDoc) -> bytes:
    return zlib.compress(f"{doc.title}\x00{doc.text}".encode(), 6)


def _unpack(packed: bytes) -> tuple[str, str]:
    title, _, text = zlib.decompress(packed).decode().partition("\x00")
    return title, text
