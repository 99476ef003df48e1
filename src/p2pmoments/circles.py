"""Circles on one daemon: every manifest we hold (the shell around core.manifest), the
circles we own (create, change, delete) and removal notices (spec/moments.md §1, §7, §8).

Every change to a circle (members, name, posting rule) is a new manifest at the next
epoch with a fresh key, so "the epoch" is simply the circle's version and a moment is
readable by the members of the epoch it was posted in.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from p2pmoments.blobstore import BlobStore
from p2pmoments.circleops import CircleEdits
from p2pmoments.core.circle_ops import Op
from p2pmoments.core.crypto import (
    CryptoError,
    LinkPublicKey,
    LinkSecretKey,
    VerifyKey,
    open_sealed,
    seal,
)
from p2pmoments.core.errors import DecodeError, RejectedError
from p2pmoments.core.identity import Identity
from p2pmoments.core.ids import IdKind, decode_id
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
from p2pmoments.errors import AmbiguousError, NotFoundError, NotOwnerError, UserInputError
from p2pmoments.events import EventBus
from p2pmoments.friends import Friends
from p2pmoments.store import AsyncStore, FriendState, Store
from p2pmoments.views import circle_json, circle_text

__all__ = ["Circles"]

Changed = Callable[[Manifest], Awaitable[None]]  # a manifest we made or kept
Gone = Callable[[bytes, bool], Awaitable[None]]  # a circle we deleted (True) or left (False)
Removed = Callable[[list[bytes]], Awaitable[None]]  # members we removed: hand them notices


async def _nothing(*args: object) -> None:
    return None


class Circles:
    """The circles of one daemon and every manifest of theirs we hold."""

    def __init__(
        self,
        store: AsyncStore,
        blobs: BlobStore,
        events: EventBus,
        friends: Friends,
        identity: Identity,
        *,
        on_change: Changed = _nothing,
        on_gone: Gone = _nothing,
        on_removed: Removed = _nothing,
        person: bytes | None = None,
    ) -> None:
        self._store = store
        self._blobs = blobs
        self._events = events
        self._friends = friends
        self._identity = identity
        # Manifests name persons: on a device other than a person's first, the person.
        self._me = person or bytes(identity.public.verify_key)
        self._me_key = VerifyKey(self._me)
        self._first_device = self._me == bytes(identity.public.verify_key)
        self.on_change = on_change
        self.on_gone = on_gone
        self.on_removed = on_removed
        self._manifests: dict[tuple[bytes, int], Manifest] = {}
        self._current: dict[bytes, Manifest] = {}
        self._keys: dict[tuple[bytes, int], bytes] = {}
        self._removed: dict[bytes, tuple[int, int]] = {}  # circle -> (epoch, when)
        # A person with several devices edits circles through op logs (circleops.py).
        self.edits: CircleEdits | None = None
        self.several_devices: Callable[[], bool] = lambda: False
        self.on_ops: Callable[[list[Op]], Awaitable[None]] = _nothing
        # On a device recovered from a sheet: the person's link secret, which opens the
        # epoch keys sealed to the person (spec/devices.md section 5.3).
        self.person_link: LinkSecretKey | None = None

    async def load(self) -> None:
        """Read every manifest and every removal from the store."""
        for raw in await self._store.run(Store.manifests):
            self._remember(decode_manifest(raw))
        self._removed = await self._store.run(Store.removed_from)
        for circle_id, epoch, sealed in await self._store.run(Store.given_keys):
            with contextlib.suppress(CryptoError):
                self._keys[(circle_id, epoch)] = open_sealed(self._identity.link_secret, sealed)

    def _remember(self, manifest: Manifest) -> None:
        self._manifests[(manifest.circle_id, manifest.epoch)] = manifest
        current = self._current.get(manifest.circle_id)
        if current is None or current.epoch < manifest.epoch:
            self._current[manifest.circle_id] = manifest

    # --- reading ---------------------------------------------------------------------

    @property
    def device(self) -> bytes:
        """This device's key: the author of the moments we post."""
        return bytes(self._identity.public.verify_key)

    @property
    def person(self) -> bytes:
        """The person this device is one of: who manifests name."""
        return self._me

    def all(self) -> list[Manifest]:
        """The current manifests of the circles we hold, by name."""
        return sorted(self._current.values(), key=lambda m: (m.name.lower(), m.circle_id))

    def every_manifest(self) -> list[Manifest]:
        """Every manifest we hold, of every epoch."""
        return list(self._manifests.values())

    def current(self, circle_id: bytes) -> Manifest | None:
        """A circle's latest manifest, if we hold the circle."""
        return self._current.get(circle_id)

    def manifest_for(self, circle_id: bytes, epoch: int) -> Manifest | None:
        """The manifest of a circle at an epoch, if we hold it."""
        return self._manifests.get((circle_id, epoch))

    def key_for(self, manifest: Manifest) -> bytes:
        """Our epoch key for a manifest (opened once, then kept); on a device other than
        our first, the key another device of ours gave it (spec/devices.md section 9)."""
        slot = (manifest.circle_id, manifest.epoch)
        if slot not in self._keys:
            person = None if self._first_device else self._me_key
            self._keys[slot] = epoch_key(manifest, self._identity, self.person_link, person)
        return self._keys[slot]

    def keys_held(self) -> list[tuple[bytes, int, bytes]]:
        """Every epoch key we can open, as (circle, epoch, key): for our other devices."""
        out = []
        for (circle_id, epoch), manifest in self._manifests.items():
            with contextlib.suppress(RejectedError):
                out.append((circle_id, epoch, self.key_for(manifest)))
        return out

    async def given(self, keys: Sequence[tuple[bytes, int, bytes]]) -> int:
        """Epoch keys another device of ours gave us: kept (sealed to this device) and
        used; how many were new."""
        new = [(c, e, k) for c, e, k in keys if (c, e) not in self._keys]
        if not new:
            return 0
        link = self._identity.public.link_key
        await self._store.run(Store.save_given_keys, [(c, e, seal(link, k)) for c, e, k in new])
        for circle_id, epoch, key in new:
            self._keys[(circle_id, epoch)] = key
        return len(new)

    def removed(self, circle_id: bytes) -> tuple[int, int] | None:
        """(first epoch without us, when) if the owner removed us from this circle."""
        return self._removed.get(circle_id)

    def member_of(self, circle_id: bytes) -> bool:
        """True if we are in the circle now, as far as we know."""
        current = self._current.get(circle_id)
        return (
            current is not None
            and circle_id not in self._removed
            and current.is_member(self._me_key)
        )

    def co_members(self) -> dict[bytes, bytes]:
        """Identity -> link key of everyone in a circle we are in (ourselves left out)."""
        out: dict[bytes, bytes] = {}
        for manifest in self._current.values():
            if self.member_of(manifest.circle_id):
                for member in manifest.members:
                    if bytes(member.verify_key) != self._me:
                        out[bytes(member.verify_key)] = bytes(member.link_key)
        return out

    def resolve(self, ref: str) -> Manifest:
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

    def json(self, manifest: Manifest) -> dict[str, Any]:
        """A circle as the API shows it."""
        return circle_json(
            manifest,
            me=self._me,
            people=self._friends.person,
            removed=self._removed.get(manifest.circle_id),
        )

    # --- circles we own ---------------------------------------------------------------

    async def create(
        self,
        name: str,
        member_refs: Sequence[str],
        members_can_post: bool,
        *,
        conversation: bool = False,
    ) -> Manifest:
        """A new circle we own, with some of our friends in it: an album, or a
        conversation (spec/moments.md section 1.1), whose members all post."""
        if any(
            m.name.lower() == name.strip().lower()
            for m in self._current.values()
            if bytes(m.owner) == self._me
        ):
            raise UserInputError(f"you already have a circle called {name.strip()!r}")
        manifest = self._sign(
            circle_id=new_circle_id(),
            epoch=0,
            name=name,
            members=self._members_of(member_refs),
            members_can_post=members_can_post or conversation,
            conversation=conversation,
        )
        await self.keep(manifest, "circle.created")
        if self.edits is not None and self.several_devices():
            await self.on_ops(await self.edits.bootstrap(manifest))
        return manifest

    async def change(
        self,
        ref: str,
        *,
        add: Sequence[str] = (),
        remove: Sequence[str] = (),
        name: str | None = None,
        members_can_post: bool | None = None,
    ) -> Manifest:
        """A new epoch of a circle we own: a fresh key for exactly the new member list;
        each member removed gets a signed notice (spec/moments.md section 8)."""
        current = self.resolve(ref)
        if bytes(current.owner) != self._me:
            raise NotOwnerError(f"only its owner can change the circle {current.name!r}")
        leaving = self._members_of(remove)
        not_in = [
            r for r, m in zip(remove, leaving, strict=True) if not current.is_member(m.verify_key)
        ]
        if not_in:
            raise UserInputError(f"not in {current.name!r}: {', '.join(not_in)}")
        gone = {bytes(m.verify_key) for m in leaving}
        joining = self._members_of(add)
        if self.edits is not None and self.several_devices():
            return await self._edit(current, joining, gone, name, members_can_post)
        return await self._change(current, joining, gone, name, members_can_post)

    async def _edit(
        self,
        current: Manifest,
        joining: list[Member],
        gone: set[bytes],
        name: str | None,
        members_can_post: bool | None,
    ) -> Manifest:
        """A person with several devices edits through the circle's op log: the first
        device issues the manifest the merge gives; another device's edits wait for it."""
        assert self.edits is not None
        circle = current.circle_id
        if not self.edits.has_log(circle):
            if not self._first_device:
                raise UserInputError(
                    "this circle's edits start on your first device: link it to this one first"
                )
            await self.on_ops(await self.edits.bootstrap(current))
        made = await self.edits.edit(
            circle,
            add=[bytes(m.verify_key) for m in joining],
            remove=sorted(gone),
            name=name,
            posting=members_can_post,
        )
        await self.on_ops(made)
        if not self._first_device:
            return current  # the first device issues it when they meet
        return await self.apply_ops(circle)

    async def rekey(self, circle: bytes) -> Manifest:
        """A new epoch of a circle we own, the same members: a key that a device revoked
        since never gets (spec/devices.md section 3)."""
        return await self._change(self._current[circle], [], set(), None, None)

    async def apply_ops(self, circle: bytes) -> Manifest:
        """On our first device: a new epoch if what the circle's ops make of it differs
        from its manifest (members, name, rule), else the manifest as it is."""
        assert self.edits is not None
        current = self._current[circle]
        state = self.edits.state(circle)
        if not state.exists or state.deleted or not self._first_device:
            return current
        now = {bytes(m.verify_key) for m in current.members} - {self._me}
        joining = []
        for person in sorted(state.members - now):
            friend = self._friends.get(person)
            if friend is None or friend.state is not FriendState.FRIEND:
                continue  # added by another device: comes in once we have them as a friend
            joining.append(
                Member(verify_key=VerifyKey(person), link_key=LinkPublicKey(friend.link_key))
            )
        gone = now - state.members
        if (
            not joining
            and not gone
            and (state.name, state.members_can_post)
            == (
                current.name,
                current.members_can_post,
            )
        ):
            return current
        return await self._change(current, joining, gone, state.name, state.members_can_post)

    async def _change(
        self,
        current: Manifest,
        joining: list[Member],
        gone: set[bytes],
        name: str | None,
        members_can_post: bool | None,
    ) -> Manifest:
        kept = [m for m in current.members if bytes(m.verify_key) not in gone | {self._me}]
        manifest = self._sign(
            circle_id=current.circle_id,
            epoch=current.epoch + 1,
            name=name if name is not None else current.name,
            members=[*kept, *joining],
            members_can_post=(
                current.members_can_post if members_can_post is None else members_can_post
            ),
            conversation=current.conversation,  # a chat stays a chat, an album an album
        )
        now = int(time.time())
        for member in gone:
            notice = create_removal(
                self._identity,
                circle_id=manifest.circle_id,
                epoch=manifest.epoch,
                member=VerifyKey(member),
                time=now,
            )
            await self._store.run(
                Store.save_removal, manifest.circle_id, member, manifest.epoch, notice.raw
            )
        back = [bytes(m.verify_key) for m in manifest.members]
        await self._store.run(Store.drop_removals, manifest.circle_id, back)
        await self.keep(manifest, "circle.changed")
        await self.on_removed(sorted(gone))
        return manifest

    async def delete(self, ref: str) -> Manifest:
        """Forget a circle and all its moments on this daemon."""
        manifest = self.resolve(ref)
        freed = await self._store.run(Store.delete_circle, manifest.circle_id)
        await asyncio.to_thread(self._blobs.delete, list(freed.chunks))
        await asyncio.to_thread(self._blobs.delete_packs, list(freed.packs))
        self._current.pop(manifest.circle_id, None)
        self._removed.pop(manifest.circle_id, None)
        for slot in [s for s in self._manifests if s[0] == manifest.circle_id]:
            del self._manifests[slot]
            self._keys.pop(slot, None)
        await self.on_gone(manifest.circle_id, True)
        self._events.publish(
            "circle.deleted", id=circle_text(manifest.circle_id), name=manifest.name
        )
        return manifest

    async def notices_for(self, member: bytes) -> list[bytes]:
        """The removal notices we hold for `member`, to hand over when we link."""
        return await self._store.run(Store.removals_for, member)

    def _sign(
        self,
        *,
        circle_id: bytes,
        epoch: int,
        name: str,
        members: list[Member],
        members_can_post: bool,
        conversation: bool = False,
    ) -> Manifest:
        if not self._first_device:
            raise UserInputError(
                "for now, circles are made and changed on your first device "
                "(spec/devices.md section 6.3 says how any device will)"
            )
        try:
            return create_manifest(
                self._identity,
                circle_id=circle_id,
                epoch=epoch,
                name=name,
                members=members,
                members_can_post=members_can_post,
                conversation=conversation,
                created=int(time.time()),
                key=new_epoch_key(),
            )
        except (DecodeError, ValueError) as exc:  # a bad name, too many members
            raise UserInputError(str(exc)) from None

    def _members_of(self, refs: Sequence[str]) -> list[Member]:
        members = []
        for ref in refs:
            friend = self._friends.resolve(ref)
            if friend.state is not FriendState.FRIEND:
                raise UserInputError(f"{friend.name} is blocked: unblock them first")
            members.append(
                Member(
                    verify_key=VerifyKey(friend.verify_key), link_key=LinkPublicKey(friend.link_key)
                )
            )
        return members

    # --- what comes from members -------------------------------------------------------

    async def keep(self, manifest: Manifest, kind: str) -> bool:
        """Keep a manifest (ours or received) and publish `kind`; False (and no event) if
        it was kept already: two members may hand the same one over at once."""
        new = await self._store.run(
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
            and manifest.is_member(self._me_key)
        ):
            # Added again: a member like any other from this epoch on.
            await self._store.run(Store.set_removed, manifest.circle_id, None, None)
            del self._removed[manifest.circle_id]
        await self.on_change(manifest)
        self._events.publish(kind, **self.json(manifest))
        return True

    async def left(self, removal: Removal) -> None:
        """The owner removed us from a circle (replication's engine checked the notice):
        we keep what we have, and show that we were removed, and when."""
        current = self._current.get(removal.circle_id)
        await self._store.run(Store.set_removed, removal.circle_id, removal.epoch, removal.time)
        self._removed[removal.circle_id] = (removal.epoch, removal.time)
        await self.on_gone(removal.circle_id, False)
        self._events.publish(
            "circle.removed",
            id=circle_text(removal.circle_id),
            name=current.name if current else "",
            epoch=removal.epoch,
            at=removal.time,
        )

    def verify(self, raw: bytes) -> Manifest:
        """A received manifest, verified, of a circle we are in at its epoch; RejectedError
        otherwise."""
        manifest = decode_manifest(raw)
        if self._first_device:
            self.key_for(manifest)  # only circles we are in
        elif not manifest.is_member(self._me_key):
            # Another device of ours gives this one the key (spec/devices.md section 9).
            raise RejectedError("we are not a member of this circle at this epoch")
        return manifest
