"""Files with versions (spec/moments.md section 9): the version graph of one post's
file, and a new version's chunks that reuse its parent's.

A version is a moment of kind VERSION answering the post (its *root*, version 1) and
naming the versions it follows (its parents). Every member holding the same records
draws the same graph from them, so every decision here (the numbering, the heads, the
siblings, which versions are dropped) is a function of the records alone: no clock, no
order of arrival.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from p2pmoments.core.blobs import (
    BIG_CHUNK_SIZE,
    INDEX_PIECE,
    MAX_BORROWED_KEYS,
    MAX_BORROWED_RUNS,
    BlobEncoder,
    BlobRef,
    _index_nonce,
    _size_ad,
    chunk_address,
)
from p2pmoments.core.crypto import Aead, random_bytes
from p2pmoments.core.moment import MAX_NOTE, MAX_PARENTS

__all__ = [
    "KEEP",
    "MAX_NOTE",
    "MAX_PARENTS",
    "MAX_VERSIONS",
    "History",
    "Version",
    "VersionEncoder",
    "history",
    "refusal",
    "relisted",
]

KEEP = 10  # the newest versions every member keeps the content of, beside every head
MAX_VERSIONS = 256  # version records of one file a member accepts; past it, refused


@dataclass(frozen=True, slots=True, kw_only=True)
class Version:
    """One version of a file as the graph sees it (the root has no parents)."""

    id: bytes
    parents: tuple[bytes, ...]
    author: bytes
    time: int  # its author's, as signed
    size: int = 0
    name: str = ""
    note: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class History:
    """A file's versions as every member holding the same records sees them."""

    root: bytes
    order: tuple[bytes, ...]  # placed versions, oldest first: version N is order[N - 1]
    heads: tuple[bytes, ...]  # placed versions no other follows, newest first
    pending: tuple[bytes, ...]  # held, but some ancestor is not here (yet): not shown
    dropped: frozenset[bytes]  # placed versions whose content every member lets go
    versions: Mapping[bytes, Version]

    @property
    def newest(self) -> bytes:
        """What the feed shows: the newest head."""
        return self.heads[0]

    @property
    def siblings(self) -> tuple[bytes, ...]:
        """The unresolved versions, newest first: every head when there are several."""
        return self.heads if len(self.heads) > 1 else ()

    def number(self, version_id: bytes) -> int:
        """Its number in the listing, from 1 (the post's own file)."""
        return self.order.index(version_id) + 1


def _key(version: Version, depth: int) -> tuple[int, int, bytes]:
    """The order of versions: by depth in the graph, then its author's time, then id."""
    return depth, version.time, version.id


def history(root: Version, records: Iterable[Version]) -> History:
    """The graph of a file drawn from its root and the version records held: a record is
    placed once every parent is (so a cycle, a parent of another file, or one not here
    is never placed); the heads are the placed versions none follows; all but the
    newest KEEP and the heads are dropped."""
    held = {v.id: v for v in records if v.id != root.id}
    depth = {root.id: 0}
    waiting = sorted(held.values(), key=lambda v: v.id)
    # Each pass places at least one record or stops: at most len(held) + 1 passes.
    for _ in range(len(held) + 1):
        left = []
        for version in waiting:
            if all(p in depth for p in version.parents):
                depth[version.id] = 1 + max(depth[p] for p in version.parents)
            else:
                left.append(version)
        if len(left) == len(waiting):
            break
        waiting = left
    versions = {root.id: root, **{i: held[i] for i in depth if i != root.id}}
    order = tuple(sorted(depth, key=lambda i: _key(versions[i], depth[i])))
    followed = {p for i in order for p in versions[i].parents}
    heads = tuple(i for i in reversed(order) if i not in followed)
    kept = set(heads) | set(order[-KEEP:])
    return History(
        root=root.id,
        order=order,
        heads=heads,
        pending=tuple(sorted(v.id for v in waiting)),
        dropped=frozenset(i for i in order if i not in kept),
        versions=versions,
    )


def refusal(
    root: bytes,
    parents: Sequence[bytes],
    files: Mapping[bytes, bytes],
    count: int,
) -> str | None:
    """Why a member refuses a version record (counted as junk), or None: `files` gives,
    for the moments it holds among the root and the parents, the post whose file each is
    a version of (itself for a post, b"" for a moment that is no file's); `count` how
    many versions of the root it holds. A parent not held is let in: it may be on its
    way (the record waits, unplaced, until it comes)."""
    if files.get(root, root) != root:
        return "a version answers a post, not a comment or another version"
    if any(files.get(p, root) != root for p in parents):
        return "a version follows versions of another file"
    if count >= MAX_VERSIONS:
        return f"more than {MAX_VERSIONS} versions of one file"
    return None


class VersionEncoder(BlobEncoder):
    """Encrypts a new version of a file as BlobEncoder does, but a chunk whose plaintext
    is its parent's chunk at the same place is borrowed rather than made anew: it is
    the parent's (address, key) and is neither written nor sent again.

    It is found without reading the parent's chunks: the new plaintext is encrypted
    under the key and nonce the parent's chunk has; if that gives the parent's address,
    the plaintexts are equal. The trial ciphertext is thrown away (never stored or
    sent), so no key encrypts two plaintexts that anyone sees. Only a parent of the
    second form, of the same chunk size, lends its chunks; an insertion shifts every
    chunk after it, which then are all new (fixed-size chunks)."""

    def __init__(self, parent: BlobRef | None, parent_chunks: Sequence[bytes]) -> None:
        super().__init__()
        lends = parent is not None and parent.index and parent.chunk_size == BIG_CHUNK_SIZE
        self._parent = parent if lends else None
        self._parent_chunks = parent_chunks if lends else ()
        self._runs: list[list[Any]] = []  # [first, count, key]
        self._keys: set[bytes] = set()
        self._trials: dict[bytes, Aead] = {}
        self.borrowed_bytes = 0

    def _chunk(self, plain: bytes | memoryview, ad: bytes, version: int) -> tuple[bytes, bytes]:
        index = len(self._addresses)
        parent = self._parent
        if version == 2 and parent is not None and index < len(self._parent_chunks):
            key = parent.key_at(index)
            if self._may_borrow(index, key):
                trial = self._trials.get(key) or self._trials.setdefault(key, Aead(key))
                address = self._parent_chunks[index]
                if chunk_address(trial.encrypt_counter(index, b"", plain), 2) == address:
                    self._borrow(index, key)
                    self._addresses.append(address)
                    self.borrowed_bytes += len(plain)
                    return address, b""  # borrowed: nothing to write
        return super()._chunk(plain, ad, version)

    def _may_borrow(self, index: int, key: bytes) -> bool:
        last = self._runs[-1] if self._runs else None
        if last is not None and last[2] == key and last[0] + last[1] == index:
            return True
        if len(self._runs) >= MAX_BORROWED_RUNS:
            return False
        return key in self._keys or len(self._keys) < MAX_BORROWED_KEYS

    def _borrow(self, index: int, key: bytes) -> None:
        last = self._runs[-1] if self._runs else None
        if last is not None and last[2] == key and last[0] + last[1] == index:
            last[1] += 1
        else:
            self._runs.append([index, 1, key])
            self._keys.add(key)

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        """As BlobEncoder.feed, less the borrowed chunks."""
        return [c for c in super().feed(data) if c[1]]

    def finish(self, **meta: Any) -> tuple[BlobRef, list[tuple[bytes, bytes]]]:
        """As BlobEncoder.finish, the reference naming the borrowed runs."""
        ref, out = super().finish(**meta)
        if self._runs and ref.index:
            ref = replace(ref, borrowed=tuple((f, n, k) for f, n, k in self._runs))
        return ref, [c for c in out if c[1]]

    def borrowed(self) -> list[bytes]:
        """The addresses of the chunks it borrowed (the new version uses them too)."""
        return [self._addresses[i] for f, n, _ in self._runs for i in range(f, f + n)]


def relisted(ref: BlobRef, chunks: Sequence[bytes]) -> tuple[BlobRef, list[tuple[bytes, bytes]]]:
    """A picked version's file (section 9.2): the same chunks as `ref` (second form, whose
    chunk addresses are `chunks`), every one borrowed, under a new chunk index of its
    own (so that receivers name and record its chunks as for any version); returns the
    reference and the index pieces to store. `ref` itself if it cannot be (first form,
    or more keys than a reference names)."""
    runs: list[list[Any]] = []
    for index in range(len(chunks)):
        key = ref.key_at(index)
        if runs and runs[-1][2] == key and runs[-1][0] + runs[-1][1] == index:
            runs[-1][1] += 1
        else:
            runs.append([index, 1, key])
    keys = {k for _, _, k in runs}
    if not ref.index or len(keys) > MAX_BORROWED_KEYS or len(runs) > MAX_BORROWED_RUNS:
        return ref, []
    key = random_bytes(32)
    aead = Aead(key)
    pieces = []
    for piece, start in enumerate(range(0, len(chunks), INDEX_PIECE)):
        plain = b"".join(chunks[start : start + INDEX_PIECE])
        ciphertext = aead.encrypt(_index_nonce(piece), _size_ad(ref.size), plain)
        pieces.append((chunk_address(ciphertext, 2), ciphertext))
    new = replace(
        ref,
        key=key,
        index=tuple(a for a, _ in pieces),
        borrowed=tuple((f, n, k) for f, n, k in runs),
    )
    return new, pieces
