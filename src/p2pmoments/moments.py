"""Circles and moments on one daemon: the shell around core.manifest and core.moment.

Every change to a circle (members, name, posting rule) is a new manifest at the
next epoch with a fresh key, so "the epoch" is simply the circle's version and
a moment is readable by the members of the epoch it was posted in.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from p2pmoments.blobstore import BlobStore
from p2pmoments.core.blobs import BlobKind, BlobRef, decrypt_chunk, encrypt_blob
from p2pmoments.core.crypto import LinkPublicKey, VerifyKey
from p2pmoments.core.errors import DecodeError, P2PMomentsError, RejectedError
from p2pmoments.core.ids import IdKind, decode_id, encode_id
from p2pmoments.core.manifest import (
    Manifest,
    Member,
    Removal,
    create_manifest,
    create_removal,
    decode_manifest,
    epoch_key,
    new_circle_id,
    new_epoch_key,
)
from p2pmoments.core.moment import (
    MAX_BLOBS,
    MAX_TEXT,
    Content,
    Kind,
    Moment,
    open_moment,
    seal_moment,
)
from p2pmoments.errors import AmbiguousError, NotFoundError, NotOwnerError
from p2pmoments.media import prepare_photo
from p2pmoments.reactions import check_emoji
from p2pmoments.store import MomentRow, Store

if TYPE_CHECKING:
    from p2pmoments.node import Node

__all__ = [
    "CHUNK_SWEEP",
    "EXPIRY_SWEEP",
    "MAX_DECODES",
    "FeedPage",
    "Moments",
    "NotOwnerError",
    "decode_cursor",
    "encode_cursor",
]

log = logging.getLogger(__name__)

VERIFY_THREADS = min(4, os.cpu_count() or 1)  # worker threads checking one batch of moments

EXPIRY_SWEEP = 30.0  # seconds between sweeps for expired moments
CHUNK_SWEEP = 3600.0  # seconds between sweeps for chunks no moment uses (and one at start)
SWEEP_GRACE = 3600.0  # a chunk file younger than this is never swept: its moment may be coming
MAX_DECODES = 1  # photos decoded at once (each may take 4 bytes a pixel: media.MAX_PIXELS)
MAX_FEED = 200
MAX_FILE_NAME = 255  # bytes of UTF-8 (spec/moments.md section 4)
MAX_MEDIA_TYPE = 100
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*", re.ASCII)


@dataclass(frozen=True, slots=True)
class Opened:
    """Moments verified and decrypted, not yet stored; and those rejected, as
    (reason, size)."""

    moments: list[Moment]
    rejected: list[tuple[str, int]]
    seconds: float


@dataclass(slots=True)
class _Pending:
    """A moment waiting to be sealed and stored by the next commit."""

    manifest: Manifest
    content: Content
    done: asyncio.Future[Moment]


class PostingError(P2PMomentsError):
    """A post could not be stored (the database failed, or the daemon is stopping)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedPage:
    """A page of the feed and where the next one starts (None: this is the last)."""

    moments: list[dict[str, Any]]
    next_cursor: str | None
    next_before: int | None


_CURSOR = re.compile(r"(-?[0-9]{1,19})\.([a-z2-7]{56})", re.ASCII)


def encode_cursor(created: int, moment_id: bytes) -> str:
    """Where a feed page ends: the last post's time and id (opaque to clients)."""
    return f"{created}.{moment_text(moment_id)}"


def decode_cursor(text: str) -> tuple[int, bytes]:
    """(time, id) from a cursor; DecodeError if it is not one encode_cursor makes."""
    match = _CURSOR.fullmatch(text)
    if match is None or not -(2**63) <= int(match[1]) < 2**63:
        raise DecodeError("this cursor is not one the feed gave (use next_cursor as it is)")
    return int(match[1]), decode_id(match[2], IdKind.MOMENT)


@functools.lru_cache(maxsize=1024)
def circle_text(circle_id: bytes) -> str:
    """A circle id's text form (circles are few: remembered)."""
    return encode_id(circle_id, IdKind.CIRCLE)


def moment_text(moment_id: bytes) -> str:
    """A moment id's text form."""
    return encode_id(moment_id, IdKind.MOMENT)


class Moments:
    """Circles and moments of one node."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._manifests: dict[tuple[bytes, int], Manifest] = {}
        self._current: dict[bytes, Manifest] = {}
        self._keys: dict[tuple[bytes, int], bytes] = {}
        self._removed: dict[bytes, tuple[int, int]] = {}  # circle -> (epoch, when)
        self._people: dict[bytes, str] = {}  # what people we linked with call themselves
        self.blobs = BlobStore(node.paths.blob_dir)
        # Our moments wait here for a commit: one at a time takes all that wait, gives
        # each the next sequence number of its circle and stores them in one transaction.
        self._waiting: list[_Pending] = []
        self._committing = asyncio.Lock()
        self._decoding = asyncio.Semaphore(MAX_DECODES)
        # Chunks of posts in progress: on disk, not yet used by a stored moment.
        self.writing: Counter[bytes] = Counter()

    async def load(self) -> None:
        """Read every manifest, and the names of people we have linked with, from the store."""
        self._people = await self.node.store.run(Store.people)
        for _circle_id, _epoch, raw in await self.node.store.run(Store.manifests):
            self._remember(decode_manifest(raw))
        for raw in await self.node.store.run(Store.current_manifests):
            manifest = decode_manifest(raw)
            self._current[manifest.circle_id] = manifest
        self._removed = await self.node.store.run(Store.removed_from)

    def _remember(self, manifest: Manifest) -> None:
        self._manifests[(manifest.circle_id, manifest.epoch)] = manifest
        current = self._current.get(manifest.circle_id)
        if current is None or current.epoch < manifest.epoch:
            self._current[manifest.circle_id] = manifest

    def current(self, circle_id: bytes) -> Manifest | None:
        """A circle's latest manifest, if we hold the circle."""
        return self._current.get(circle_id)

    def epochs(self, circle_id: bytes) -> dict[int, Manifest]:
        """Every manifest we hold of a circle, by epoch."""
        return {e: m for (c, e), m in self._manifests.items() if c == circle_id}

    def manifest_for(self, circle_id: bytes, epoch: int) -> Manifest | None:
        """The manifest of a circle at an epoch, if we hold it."""
        return self._manifests.get((circle_id, epoch))

    def key_for(self, manifest: Manifest) -> bytes:
        """Our epoch key for a manifest (opened once, then cached)."""
        slot = (manifest.circle_id, manifest.epoch)
        if slot not in self._keys:
            self._keys[slot] = epoch_key(manifest, self.node.identity)
        return self._keys[slot]

    # --- circles ------------------------------------------------------------

    def circles(self) -> list[Manifest]:
        """Current manifests of the circles we are in, by name."""
        return sorted(self._current.values(), key=lambda m: (m.name.lower(), m.circle_id))

    def resolve_circle(self, ref: str) -> Manifest:
        """A circle by name (any case), id, or id prefix of 6 characters or more."""
        ref = ref.strip()
        with contextlib.suppress(DecodeError):
            raw = decode_id(ref, IdKind.CIRCLE)
            if raw in self._current:
                return self._current[raw]
        matches = [m for m in self._current.values() if m.name.lower() == ref.lower()]
        if not matches and len(ref) >= 6:
            matches = [
                m
                for m in self._current.values()
                if circle_text(m.circle_id).startswith(ref.lower())
            ]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise NotFoundError(f"no circle is called or starts with {ref!r}")
        listed = ", ".join(f"{m.name} ({circle_text(m.circle_id)[:10]})" for m in matches)
        raise AmbiguousError(f"{ref!r} could be any of: {listed}; use the circle's id")

    def _members_of(self, refs: Sequence[str]) -> list[Member]:
        members = []
        for ref in refs:
            friend = self.node.resolve_friend(ref)
            if friend.state != "friend":
                raise DecodeError(f"{friend.name} is blocked: unblock them first")
            members.append(
                Member(
                    verify_key=VerifyKey(friend.verify_key), link_key=LinkPublicKey(friend.link_key)
                )
            )
        return members

    async def save(self, manifest: Manifest, kind: str) -> bool:
        """Keep a manifest (ours or received) and publish `kind`; False (and no event) if
        it was kept already: two members may hand the same one over at once."""
        new = await self.node.store.run(
            Store.save_manifest,
            manifest.circle_id,
            manifest.epoch,
            bytes(manifest.owner),
            manifest.name,
            manifest.raw,
        )
        if not new:
            return False
        self._remember(manifest)
        removed = self._removed.get(manifest.circle_id)
        if (
            removed is not None
            and manifest.epoch >= removed[0]
            and manifest.is_member(self.node.identity.public.verify_key)
        ):
            # Added again: a member like any other from this epoch on.
            await self.node.store.run(Store.set_removed, manifest.circle_id, None, None)
            del self._removed[manifest.circle_id]
        self.node.refresh_co_members()
        self.node.events.publish(kind, **self.circle_json(manifest))
        return True

    async def create_circle(
        self, name: str, member_refs: Sequence[str], members_can_post: bool
    ) -> Manifest:
        """A new circle we own, with some of our friends in it."""
        if any(
            m.name.lower() == name.strip().lower()
            for m in self._current.values()
            if m.owner == self.node.identity.public.verify_key
        ):
            raise DecodeError(f"you already have a circle called {name.strip()!r}")
        manifest = create_manifest(
            self.node.identity,
            circle_id=new_circle_id(),
            epoch=0,
            name=name,
            members=self._members_of(member_refs),
            members_can_post=members_can_post,
            created=int(time.time()),
            key=new_epoch_key(),
        )
        await self.save(manifest, "circle.created")
        await self.node.replication.circle_changed(manifest)
        return manifest

    async def change_circle(
        self,
        ref: str,
        *,
        add: Sequence[str] = (),
        remove: Sequence[str] = (),
        name: str | None = None,
        members_can_post: bool | None = None,
    ) -> Manifest:
        """A new epoch of a circle we own: a fresh key for exactly the new member list."""
        current = self.resolve_circle(ref)
        if current.owner != self.node.identity.public.verify_key:
            raise NotOwnerError(f"only its owner can change the circle {current.name!r}")
        gone = {bytes(m.verify_key) for m in self._members_of(remove)}
        not_in = [
            r
            for r, m in zip(remove, self._members_of(remove), strict=True)
            if not current.is_member(m.verify_key)
        ]
        if not_in:
            raise DecodeError(f"not in {current.name!r}: {', '.join(not_in)}")
        me = bytes(self.node.identity.public.verify_key)
        kept = [
            m
            for m in current.members
            if bytes(m.verify_key) not in gone and bytes(m.verify_key) != me
        ]
        manifest = create_manifest(
            self.node.identity,
            circle_id=current.circle_id,
            epoch=current.epoch + 1,
            name=name if name is not None else current.name,
            members=[*kept, *self._members_of(add)],
            members_can_post=(
                current.members_can_post if members_can_post is None else members_can_post
            ),
            created=int(time.time()),
            key=new_epoch_key(),
        )
        await self.save(manifest, "circle.changed")
        now = int(time.time())
        for member in gone:
            notice = create_removal(
                self.node.identity,
                circle_id=manifest.circle_id,
                epoch=manifest.epoch,
                member=VerifyKey(member),
                time=now,
            )
            await self.node.store.run(
                Store.save_removal, manifest.circle_id, member, manifest.epoch, notice.raw
            )
        back = [bytes(m.verify_key) for m in manifest.members]
        await self.node.store.run(Store.drop_removals, manifest.circle_id, back)
        await self.node.replication.circle_changed(manifest)
        for member in gone:
            await self.node.replication.tell_removed(member)
        return manifest

    def removed(self, circle_id: bytes) -> tuple[int, int] | None:
        """(first epoch without us, when) if the owner removed us from this circle."""
        return self._removed.get(circle_id)

    def member_of(self, circle_id: bytes) -> bool:
        """True if we are in the circle now, as far as we know."""
        current = self._current.get(circle_id)
        return (
            current is not None
            and circle_id not in self._removed
            and current.is_member(self.node.identity.public.verify_key)
        )

    async def accept_removal(self, removal: Removal) -> bool:
        """The owner's word that we are out of a circle: we keep what we have, show that
        we were removed, and stop syncing it. False if it does not apply (not our circle,
        not its owner, not us, or a newer manifest names us again)."""
        current = self._current.get(removal.circle_id)
        me = self.node.identity.public.verify_key
        if (
            current is None
            or removal.owner != current.owner
            or removal.member != me
            or removal.circle_id in self._removed
            or (current.epoch >= removal.epoch and current.is_member(me))
        ):
            return False
        await self.node.store.run(Store.set_removed, removal.circle_id, removal.epoch, removal.time)
        self._removed[removal.circle_id] = (removal.epoch, removal.time)
        self.node.refresh_co_members()
        self.node.events.publish(
            "circle.removed",
            id=circle_text(removal.circle_id),
            name=current.name,
            epoch=removal.epoch,
            at=removal.time,
        )
        return True

    async def delete_circle(self, ref: str) -> Manifest:
        """Forget a circle and all its moments on this daemon."""
        manifest = self.resolve_circle(ref)
        freed = await self.node.store.run(Store.delete_circle, manifest.circle_id)
        await asyncio.to_thread(self.blobs.delete, freed)
        self._current.pop(manifest.circle_id, None)
        for slot in [s for s in self._manifests if s[0] == manifest.circle_id]:
            del self._manifests[slot]
            self._keys.pop(slot, None)
        self.node.events.publish(
            "circle.deleted", id=circle_text(manifest.circle_id), name=manifest.name
        )
        return manifest

    def person(self, key: bytes | VerifyKey) -> dict[str, Any]:
        """Someone as the API shows them: {"identity", "name", "friend"}.

        The name is ours for them if we know them (ourselves, a friend), else what they
        call themselves, from their hello (kept in the store); `friend` is false for a
        co-member who is not our friend (or one we blocked)."""
        raw = bytes(key)
        text = encode_id(raw, IdKind.IDENTITY)
        if raw == bytes(self.node.identity.public.verify_key):
            return {"identity": text, "name": self.node.name, "friend": True}
        friend = self.node.friend(raw)
        if friend is not None:
            return {"identity": text, "name": friend.name, "friend": friend.state == "friend"}
        return {"identity": text, "name": self._people.get(raw) or text[:8], "friend": False}

    async def remember_name(self, key: bytes, name: str) -> None:
        """Keep the name someone we linked with gave in their hello (if it changed)."""
        if self._people.get(key) != name:
            await self.node.store.run(Store.remember_person, key, name, int(time.time()))
            self._people[key] = name

    def circle_json(self, m: Manifest) -> dict[str, Any]:
        """A circle as the API shows it."""
        me = self.node.identity.public.verify_key
        return {
            "id": circle_text(m.circle_id),
            "name": m.name,
            "epoch": m.epoch,
            "owner": self.person(m.owner),
            "mine": m.owner == me,
            "removed": None
            if m.circle_id not in self._removed
            else {"epoch": self._removed[m.circle_id][0], "at": self._removed[m.circle_id][1]},
            "members_can_post": m.members_can_post,
            "members": [self.person(x.verify_key) for x in m.members],
        }

    # --- moments --------------------------------------------------------------

    async def _publish(self, manifest: Manifest, content: Content) -> Moment:
        """Seal and store one of our moments; concurrent calls share one commit.

        Sequence numbers are given at the commit, in the order the calls were made, so
        every accepted moment is stored and none takes another's number (issue 10)."""
        if manifest.circle_id in self._removed:
            raise NotOwnerError(
                f"you were removed from {manifest.name!r}: you keep what you had, "
                "but cannot post, comment or react there"
            )
        pending = _Pending(manifest, content, asyncio.get_running_loop().create_future())
        self._waiting.append(pending)
        async with self._committing:
            if not pending.done.done():
                batch, self._waiting = self._waiting, []
                await self._commit(batch)
        return pending.done.result()

    async def _commit(self, batch: list[_Pending]) -> None:
        """Seal and store a batch of our moments; every one's future is resolved."""
        try:
            me = bytes(self.node.identity.public.verify_key)
            seqs: dict[bytes, int] = {}
            for circle_id in {p.manifest.circle_id for p in batch}:
                seqs[circle_id] = await self.node.store.run(Store.next_seq, circle_id, me)
            sealed: list[tuple[_Pending, Moment]] = []
            now = int(time.time())
            for pending in batch:
                circle_id = pending.manifest.circle_id
                try:
                    moment = seal_moment(
                        self.node.identity,
                        pending.manifest,
                        self.key_for(pending.manifest),
                        seq=seqs[circle_id],
                        time=now,
                        content=pending.content,
                    )
                except DecodeError as exc:
                    pending.done.set_exception(exc)
                    continue
                seqs[circle_id] += 1
                sealed.append((pending, moment))
            added = (
                {m.id for m in await self._store_many([m for _, m in sealed])} if sealed else set()
            )
        except BaseException as exc:
            failure = exc if isinstance(exc, P2PMomentsError) else PostingError(f"{exc!r}")
            for pending in batch:
                if not pending.done.done():
                    pending.done.set_exception(failure)
            if not isinstance(exc, Exception):
                raise  # cancelled: the others are told, this one stops
            return
        for pending, moment in sealed:
            if moment.id in added:
                pending.done.set_result(moment)
            else:  # a bug: our own sequence number taken
                pending.done.set_exception(PostingError("the moment could not be stored"))
        for moment in [m for _, m in sealed if m.id in added]:
            await self.node.replication.stored(moment, None)

    async def _store(self, moment: Moment) -> bool:
        return bool(await self._store_many([moment]))

    async def _store_many(self, moments: Sequence[Moment]) -> list[Moment]:
        """Store verified moments in one transaction; returns those that were new."""
        rows = []
        for moment in moments:
            c = moment.content
            rows.append(
                MomentRow(
                    moment_id=moment.id,
                    circle_id=moment.circle_id,
                    author=bytes(moment.author),
                    seq=moment.seq,
                    epoch=moment.epoch,
                    created=moment.time,
                    kind=int(c.kind),
                    reply_to=c.reply_to if c.reply_to is not None else c.target,
                    expires=c.expires,
                    envelope=moment.envelope,
                    chunks=tuple(a for ref in c.blobs for a in ref.addresses()),
                )
            )
        flags = await self.node.store.run(Store.add_moments, rows)
        added = [m for m, new in zip(moments, flags, strict=True) if new]
        # A retraction that came before its target (relays deliver in any order).
        early = await self.node.store.run(
            Store.retracted_among, [m.id for m in added if m.content.kind is not Kind.RETRACTION]
        )
        for moment in added:
            c = moment.content
            if moment.id in early:
                freed = await self.node.store.run(Store.retract, moment.id)
                await asyncio.to_thread(self.blobs.delete, freed)
            elif c.kind is Kind.RETRACTION and c.target is not None:
                freed = await self.node.store.run(Store.retract, c.target)
                await asyncio.to_thread(self.blobs.delete, freed)
                self.node.events.publish("moment.retracted", id=moment_text(c.target))
            else:
                # A comment or reaction names its moment, so a page can refresh just that one.
                replying = {} if c.reply_to is None else {"reply_to": moment_text(c.reply_to)}
                self.node.events.publish(
                    "moment.added",
                    id=moment_text(moment.id),
                    circle=circle_text(moment.circle_id),
                    kind=c.kind.name.lower(),
                    **replying,
                )
        return added

    async def post(
        self,
        circle_ref: str,
        text: str,
        expires_in: int | None = None,
        *,
        photos: Sequence[bytes] = (),
        files: Sequence[tuple[str, bytes, str]] = (),
    ) -> Moment:
        """Post text, photos and files (name, data, media type) to a circle.

        Everything is checked before anything is stored: a refused post leaves nothing
        on disk (issue 10)."""
        if not text.strip() and not photos and not files:
            raise DecodeError("a moment needs some text, a photo or a file")
        _check_text(text)
        if len(photos) + len(files) > MAX_BLOBS:
            raise DecodeError(f"a moment has at most {MAX_BLOBS} photos and files")
        manifest = self.resolve_circle(circle_ref)
        self._check_may_post(manifest)
        expires = int(time.time()) + expires_in if expires_in else None
        refs, chunks = await self._make_blobs(photos, files)
        content = Content(kind=Kind.POST, text=text, expires=expires, blobs=tuple(refs))
        if not chunks:
            return await self._publish(manifest, content)
        # Sealed once as a check (the envelope's size, every rule) before a chunk is written.
        seal_moment(
            self.node.identity,
            manifest,
            self.key_for(manifest),
            seq=1,
            time=int(time.time()),
            content=content,
        )
        addresses = Counter(a for a, _ in chunks)
        self.writing += addresses
        stored = False
        try:
            await asyncio.to_thread(self.blobs.put_many, chunks)
            moment = await self._publish(manifest, content)
            stored = True
            return moment
        finally:
            self.writing -= addresses
            if not stored:
                await asyncio.to_thread(self.blobs.delete, list(addresses))

    def _check_may_post(self, manifest: Manifest) -> None:
        me = self.node.identity.public.verify_key
        if not manifest.is_member(me):
            raise DecodeError(f"you are no longer a member of the circle {manifest.name!r}")
        if not manifest.may_post(me):
            raise DecodeError("only the owner may post in this circle")

    async def _make_blobs(
        self, photos: Sequence[bytes], files: Sequence[tuple[str, bytes, str]]
    ) -> tuple[list[BlobRef], list[tuple[bytes, bytes]]]:
        """The references and encrypted chunks of a new moment's photos and files, in
        memory: nothing is written. Photos are decoded MAX_DECODES at a time."""
        keep = self.node.config.keep_location
        prepared = []
        for n, data in enumerate(photos, 1):
            async with self._decoding:
                prepared.append(
                    await asyncio.to_thread(
                        prepare_photo, data, keep_location=keep, label=f"photo {n}"
                    )
                )
        named = [(_file_name(name), data, _media_type(kind)) for name, data, kind in files]

        def encrypt() -> tuple[list[BlobRef], list[tuple[bytes, bytes]]]:
            refs, chunks = [], []
            for photo in prepared:
                thumb, thumb_chunks = encrypt_blob(
                    photo.thumbnail,
                    kind=BlobKind.PHOTO,
                    media_type="image/jpeg",
                    width=photo.thumb_width,
                    height=photo.thumb_height,
                )
                full, full_chunks = encrypt_blob(
                    photo.data,
                    kind=BlobKind.PHOTO,
                    media_type=photo.media_type,
                    width=photo.width,
                    height=photo.height,
                    thumbnail=thumb,
                )
                chunks += thumb_chunks + full_chunks
                refs.append(full)
            for name, data, media_type in named:
                ref, file_chunks = encrypt_blob(
                    data, kind=BlobKind.FILE, media_type=media_type, name=name
                )
                chunks += file_chunks
                refs.append(ref)
            return refs, chunks

        return await asyncio.to_thread(encrypt)

    async def blob(self, ref: str, kind: BlobKind, n: int, thumbnail: bool) -> BlobRef:
        """The n-th (from 1) photo or file of a moment, or its thumbnail."""
        target, _ = await self._target(ref)
        found = [r for r in target.content.blobs if r.kind is kind]
        if not 1 <= n <= len(found):
            what = "photo" if kind is BlobKind.PHOTO else "file"
            raise NotFoundError(f"this moment has {len(found)} {what}(s); there is no {what} {n}")
        chosen = found[n - 1]
        if thumbnail:
            if chosen.thumbnail is None:
                raise NotFoundError("this photo has no thumbnail")
            return chosen.thumbnail
        return chosen

    async def missing_in(self, circle_ids: Sequence[bytes]) -> dict[bytes, tuple[int, list[bytes]]]:
        """Moments of these circles whose chunks have not all arrived (to resume after a
        cut): moment id -> (how many chunks it uses, those not here)."""
        pairs = await self.node.store.run(Store.chunks_of_circles, circle_ids)

        def missing() -> dict[bytes, tuple[int, list[bytes]]]:
            uses: dict[bytes, list[bytes]] = {}
            for moment_id, address in pairs:
                uses.setdefault(moment_id, []).append(address)
            out = {}
            for moment_id, addresses in uses.items():
                lacking = [a for a in addresses if not self.blobs.has(a)]
                if lacking:
                    out[moment_id] = (len(addresses), lacking)
            return out

        return await asyncio.to_thread(missing)

    def missing_chunks(self, moment: Moment) -> tuple[int, list[bytes]]:
        """How many chunks a moment uses, and those we do not hold yet (blocking)."""
        addresses = [a for ref in moment.content.blobs for a in ref.addresses()]
        return len(addresses), [a for a in addresses if not self.blobs.has(a)]

    def chunks_held(self, ref: BlobRef) -> int:
        """How many of a blob's chunks (its thumbnail's included) are here (blocking)."""
        return sum(1 for a in ref.addresses() if self.blobs.has(a))

    def check_chunks(self, ref: BlobRef) -> None:
        """NotFoundError unless every chunk of the blob is here (blocking)."""
        if not all(self.blobs.has(address) for address in ref.chunks):
            raise NotFoundError("part of this photo or file has not arrived yet")

    def read_chunk(self, ref: BlobRef, index: int) -> bytes:
        """One verified, decrypted chunk of a blob we hold (blocking)."""
        ciphertext = self.blobs.get(ref.chunks[index])
        if ciphertext is None:
            raise DecodeError("a chunk went missing")
        return decrypt_chunk(ref, index, ciphertext)

    async def _target(self, ref: str) -> tuple[Moment, Manifest]:
        raw = await self._resolve_moment_id(ref)
        rows = await self.node.store.run(Store.moment_rows, moment_id=raw, now=int(time.time()))
        if not rows or rows[0][8]:
            raise NotFoundError(f"no moment {ref!r} (or it was retracted or has expired)")
        moment = self._open_row(rows[0])
        manifest = self._current[moment.circle_id]
        return moment, manifest

    async def comment(self, ref: str, text: str) -> Moment:
        """Comment on a moment, in its circle."""
        target, manifest = await self._target(ref)
        if not text.strip():
            raise DecodeError("a comment needs some text")
        _check_text(text)
        return await self._publish(
            manifest, Content(kind=Kind.COMMENT, text=text, reply_to=target.id)
        )

    async def react(self, ref: str, emoji: str) -> Moment:
        """React to a moment with one emoji."""
        emoji = check_emoji(emoji)
        target, manifest = await self._target(ref)
        return await self._publish(
            manifest, Content(kind=Kind.REACTION, emoji=emoji, reply_to=target.id)
        )

    async def retract(self, ref: str) -> bytes:
        """Retract one of our moments: its content goes everywhere, a marker stays."""
        target, manifest = await self._target(ref)
        if target.author != self.node.identity.public.verify_key:
            raise NotOwnerError("only its author can retract a moment")
        await self._publish(manifest, Content(kind=Kind.RETRACTION, target=target.id))
        return target.id

    async def receive(self, envelope: bytes, sender: bytes | None) -> Moment | None:
        """Verify and store a moment from a peer; the reason is recorded if rejected."""
        added, _ = await self.receive_many([envelope], sender)
        return added[0] if added else None

    def _open_all(self, envelopes: Sequence[bytes]) -> tuple[list[Moment], list[tuple[str, int]]]:
        opened: list[Moment] = []
        rejected: list[tuple[str, int]] = []
        for envelope in envelopes:
            try:
                opened.append(open_moment(envelope, self.manifest_for, self.key_for))
            except RejectedError as exc:
                rejected.append((exc.reason, len(envelope)))
        return opened, rejected

    async def receive_many(
        self, envelopes: Sequence[bytes], sender: bytes | None
    ) -> tuple[list[Moment], int]:
        """Verify and store moments from a peer, in order, in one transaction.

        Returns those that were new, and how many were rejected (each one's reason is
        recorded)."""
        return await self.accept(await self.open_many(envelopes), sender)

    async def open_many(self, envelopes: Sequence[bytes]) -> Opened:
        """Verify and decrypt moments on worker threads (signature checks release the
        GIL, so a big batch is split over the cores); nothing is stored yet."""
        if not envelopes:
            return Opened([], [], 0.0)
        began = time.perf_counter()
        parts = max(1, min(VERIFY_THREADS, len(envelopes) // 64))
        size = -(-len(envelopes) // parts)
        results = await asyncio.gather(
            *(
                asyncio.to_thread(self._open_all, envelopes[i : i + size])
                for i in range(0, len(envelopes), size)
            )
        )
        return Opened(
            [m for part, _ in results for m in part],
            [r for _, part in results for r in part],
            time.perf_counter() - began,
        )

    async def accept(self, opened: Opened, sender: bytes | None) -> tuple[list[Moment], int]:
        """Store moments `open_many` verified, unless they answer a moment of another
        circle or retract someone else's; returns those that were new, and how many
        were rejected in all (each one's reason is recorded)."""
        began = time.perf_counter()
        rejected = list(opened.rejected)
        refs = [r for m in opened.moments for r in (m.content.reply_to, m.content.target) if r]
        owners = await self.node.store.run(Store.moment_owners, refs) if refs else {}
        owners.update({m.id: (m.circle_id, bytes(m.author)) for m in opened.moments})
        accepted: list[Moment] = []
        for moment in opened.moments:
            c = moment.content
            answered = [owners.get(r) for r in (c.reply_to, c.target) if r is not None]
            if any(o is not None and o[0] != moment.circle_id for o in answered):
                rejected.append(("it answers a moment of another circle", len(moment.envelope)))
            elif (
                c.kind is Kind.RETRACTION
                and c.target in owners
                and owners[c.target][1] != bytes(moment.author)
            ):
                rejected.append(("only its author can retract a moment", len(moment.envelope)))
            else:
                accepted.append(moment)
        if rejected:
            await self.node.store.run(Store.record_rejections, int(time.time()), rejected, sender)
            log.info("rejected %d moment(s): %s", len(rejected), rejected[0][0])
        added = await self._store_many(accepted) if accepted else []
        log.debug(
            "received %d moments: %d new, %d rejected; checked in %.3f s, stored in %.3f s",
            len(opened.moments) + len(opened.rejected),
            len(added),
            len(rejected),
            opened.seconds,
            time.perf_counter() - began,
        )
        return added, len(rejected)

    async def expire(self) -> int:
        """Delete every expired moment now; returns how many."""
        count, freed = await self.node.store.run(Store.delete_expired, int(time.time()))
        await asyncio.to_thread(self.blobs.delete, freed)
        if count:
            self.node.events.publish("moment.expired", count=count)
        return int(count)

    async def sweep_chunks(self) -> int:
        """Delete chunk files that no moment uses (left by a crash, or by a moment gone
        while its chunks were arriving); returns how many. Chunks of posts in progress
        and files younger than SWEEP_GRACE are left alone. A received moment's row is
        stored before its chunks are asked for, so those it still awaits are in use."""
        found = await asyncio.to_thread(self.blobs.old_chunks, time.time() - SWEEP_GRACE)
        if not found:
            return 0
        used = await self.node.store.run(Store.chunks_in_use, found)
        unused = [a for a in found if a not in used and a not in self.writing]
        if unused:
            await asyncio.to_thread(self.blobs.delete, unused)
            log.info("swept %d chunk(s) no moment uses", len(unused))
        return len(unused)

    async def expiry_loop(self) -> None:
        """Sweep expired moments, and now and then unused chunks, until cancelled."""
        next_chunk_sweep = 0.0
        while True:
            await self.expire()
            if time.monotonic() >= next_chunk_sweep:
                await self.sweep_chunks()
                next_chunk_sweep = time.monotonic() + CHUNK_SWEEP
            await asyncio.sleep(EXPIRY_SWEEP)

    # --- reading ----------------------------------------------------------------

    async def _resolve_moment_id(self, ref: str) -> bytes:
        ref = ref.strip().lower()
        with contextlib.suppress(DecodeError):
            return decode_id(ref, IdKind.MOMENT)
        if len(ref) < 6:
            raise NotFoundError(f"{ref!r} is not a moment id (give at least 6 characters)")
        rows = await self.node.store.run(Store.moment_rows, limit=10_000, now=int(time.time()))
        matches = {r[0] for r in rows if moment_text(r[0]).startswith(ref)}
        if len(matches) == 1:
            return bytes(matches.pop())
        if not matches:
            raise NotFoundError(f"no moment starts with {ref!r}")
        raise AmbiguousError(f"{ref!r} matches {len(matches)} moments; give more of the id")

    def _open_row(self, row: tuple[Any, ...]) -> Moment:
        return open_moment(row[9], self.manifest_for, self.key_for)

    def _json(self, row: tuple[Any, ...]) -> dict[str, Any]:
        manifest = self._current.get(row[1])
        return {
            "id": moment_text(row[0]),
            "circle": {"id": circle_text(row[1]), "name": manifest.name if manifest else ""},
            "author": self.person(row[2]),
            "time": row[4],
            "expires": row[7],
            "retracted": bool(row[8]),
            "text": "",
            "comments": [],
            "reactions": {},
            "reactions_by": {},
            "photos": [],
            "files": [],
        }

    @staticmethod
    def _add_blobs(base: dict[str, Any], refs: list[BlobRef], held: list[int]) -> None:
        for ref, here in zip(refs, held, strict=True):
            # Transfer progress: how many of its chunks (thumbnail's included) are here.
            progress = {"chunks": len(ref.addresses()), "chunks_held": here}
            if ref.kind is BlobKind.PHOTO:
                base["photos"].append(
                    {
                        "n": len(base["photos"]) + 1,
                        "type": ref.media_type,
                        "width": ref.width,
                        "height": ref.height,
                        "size": ref.size,
                        **progress,
                    }
                )
            else:
                base["files"].append(
                    {
                        "n": len(base["files"]) + 1,
                        "name": ref.name,
                        "type": ref.media_type,
                        "size": ref.size,
                        **progress,
                    }
                )

    def new_post_json(self, moment: Moment) -> dict[str, Any]:
        """A post we have just stored, as moment_json shows it, without reading it back:
        no comments yet, every chunk here."""
        c = moment.content
        row = (moment.id, moment.circle_id, bytes(moment.author), moment.seq, moment.time)
        base = self._json((*row, int(c.kind), c.reply_to, c.expires, 0))
        base["text"] = c.text
        refs = list(c.blobs)
        self._add_blobs(base, refs, [len(r.addresses()) for r in refs])
        return base

    async def moment_json(self, row: tuple[Any, ...]) -> dict[str, Any]:
        """A post with its comments and reactions, as the API shows it."""
        base = self._json(row)
        if row[8]:
            return base
        moment = self._open_row(row)
        base["text"] = moment.content.text
        refs = list(moment.content.blobs)
        held = await asyncio.to_thread(lambda: [self.chunks_held(r) for r in refs]) if refs else []
        self._add_blobs(base, refs, held)
        replies = await self.node.store.run(
            Store.moment_rows, reply_to=row[0], limit=1000, now=int(time.time())
        )
        for reply in sorted(replies, key=lambda r: r[4]):
            if reply[8] or reply[5] not in (Kind.COMMENT, Kind.REACTION):
                continue
            answer = self._open_row(reply)
            who = self.person(answer.author)
            if answer.content.kind is Kind.COMMENT:
                base["comments"].append(
                    {
                        "id": moment_text(answer.id),
                        "author": who,
                        "time": answer.time,
                        "text": answer.content.text,
                    }
                )
            else:
                emoji = answer.content.emoji
                base["reactions"].setdefault(emoji, []).append(who["name"])
                base["reactions_by"].setdefault(emoji, []).append(who)
        return base

    async def feed(
        self, circle_ref: str | None, before: int | None, limit: int
    ) -> list[dict[str, Any]]:
        """Posts, newest first, with their comments and reactions."""
        return (await self.feed_page(circle_ref, limit, before=before)).moments

    async def feed_page(
        self,
        circle_ref: str | None,
        limit: int,
        *,
        before: int | None = None,
        cursor: str | None = None,
    ) -> FeedPage:
        """A page of posts, newest first: those older than `before` (a Unix time), or
        just past `cursor` (the last page's next_cursor, stable and unique: no post is
        skipped or repeated, however many share a second)."""
        circle_id = self.resolve_circle(circle_ref).circle_id if circle_ref else None
        limit = min(limit, MAX_FEED)
        rows = await self.node.store.run(
            Store.moment_rows,
            circle_id=circle_id,
            before=before,
            after=None if cursor is None else decode_cursor(cursor),
            limit=limit + 1,  # one more: is there a next page?
            now=int(time.time()),
        )
        more, rows = len(rows) > limit, rows[:limit]
        return FeedPage(
            moments=[await self.moment_json(r) for r in rows],
            next_cursor=encode_cursor(rows[-1][4], rows[-1][0]) if more else None,
            next_before=rows[-1][4] if more else None,
        )

    async def get(self, ref: str) -> dict[str, Any]:
        """One moment by id or id prefix."""
        raw = await self._resolve_moment_id(ref)
        rows = await self.node.store.run(Store.moment_rows, moment_id=raw, now=int(time.time()))
        if not rows:
            raise NotFoundError(f"no moment {ref!r} (or it has expired)")
        return await self.moment_json(rows[0])


def _check_text(text: str) -> None:
    size = len(text.encode("utf-8"))
    if size > MAX_TEXT:
        raise DecodeError(
            f"a moment's text is at most {MAX_TEXT >> 10} KiB ({MAX_TEXT:,} bytes of UTF-8); "
            f"this one is {size:,} bytes"
        )


def _file_name(name: str) -> str:
    """A file's name as a moment carries it: at most MAX_FILE_NAME bytes of UTF-8."""
    clipped = name.strip().encode("utf-8")[:MAX_FILE_NAME].decode("utf-8", errors="ignore")
    return clipped or "file"


def _media_type(given: str) -> str:
    """type/subtype, lower case, without parameters; anything else is octet-stream."""
    kind = given.partition(";")[0].strip().lower()
    if len(kind) <= MAX_MEDIA_TYPE and _MEDIA_TYPE.fullmatch(kind):
        return kind
    return "application/octet-stream"
