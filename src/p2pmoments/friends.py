"""Friends: who they are, what we call them, blocking; and the names of everyone we
have linked with (co-members who are not friends are shown by the name they give)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from p2pmoments.core.crypto import BadSignatureError, LinkPublicKey, VerifyKey
from p2pmoments.core.errors import DecodeError
from p2pmoments.core.identity import PublicIdentity
from p2pmoments.core.ids import IdKind, decode_id, encode_id
from p2pmoments.core.profile import check_display_name
from p2pmoments.core.self_sync import SharedFriend
from p2pmoments.errors import AmbiguousError, NotFoundError, user_input
from p2pmoments.events import EventBus
from p2pmoments.store import AsyncStore, FriendRecord, FriendState, Store

if TYPE_CHECKING:
    from p2pmoments.net.links import Hello

__all__ = ["Friends", "Person", "friend_from_hello", "identity_text"]

log = logging.getLogger(__name__)


def identity_text(raw: bytes) -> str:
    """The text form of an identity's raw key."""
    return encode_id(raw, IdKind.IDENTITY)


def friend_from_hello(hello: Hello, host: str | None, port: int | None, now: int) -> FriendRecord:
    """A friend as its hello names it (after pairing, or coming back to a recovered
    device), reachable at `host`:`port` if known."""
    return FriendRecord(
        verify_key=hello.key,
        link_key=hello.link_key,
        link_signature=hello.link_signature,
        name=hello.name,
        their_name=hello.name,
        state=FriendState.FRIEND,
        since=now,
        last_seen=now,
        host=host,
        port=port,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Person:
    """Someone as the user sees them: a name, and whether they are a friend."""

    identity: bytes
    name: str
    friend: bool


Change = Callable[[FriendRecord | None, bytes], None]  # (the friend now, or None; their key)


class Friends:
    """The friends of one daemon, cached from the store."""

    def __init__(
        self, store: AsyncStore, events: EventBus, me: bytes, on_change: Change = lambda f, k: None
    ) -> None:
        self._store = store
        self._events = events
        self._me = me
        self._on_change = on_change
        self._friends: dict[bytes, FriendRecord] = {}
        self._by_link_key: dict[bytes, FriendRecord] = {}
        self._names: dict[bytes, str] = {}  # what people we linked with call themselves
        self.my_name = ""
        # Whose a key is: a device of a person is that person (persons.Persons.person_of).
        self.person_of: Callable[[bytes], bytes] = lambda key: key
        self.removed: dict[bytes, int] = {}  # friends the person removed, and when

    async def load(self) -> None:
        """Read friends and names from the store."""
        self.my_name = await self._store.run(Store.get_name)
        self._names = await self._store.run(Store.people)
        await self._reload()

    async def _reload(self) -> None:
        self.removed = await self._store.run(Store.friend_removals)
        self._friends = {f.verify_key: f for f in await self._store.run(Store.friends)}
        self._by_link_key = {f.link_key: f for f in self._friends.values()}

    # --- reading -------------------------------------------------------------------

    def get(self, key: bytes) -> FriendRecord | None:
        """A friend (or blocked identity) by raw key."""
        return self._friends.get(key)

    def by_link_key(self, link_key: bytes) -> FriendRecord | None:
        """The friend (or blocked identity) with this link key."""
        return self._by_link_key.get(link_key)

    def all(self) -> list[FriendRecord]:
        """Friends and blocked identities, oldest first."""
        return sorted(self._friends.values(), key=lambda f: (f.since, f.name))

    def count(self) -> int:
        """How many friends (not counting those blocked)."""
        return sum(1 for f in self._friends.values() if f.state is FriendState.FRIEND)

    def is_friend(self, key: bytes) -> bool:
        """True for a friend who is not blocked."""
        friend = self._friends.get(key)
        return friend is not None and friend.state is FriendState.FRIEND

    def resolve(self, ref: str) -> FriendRecord:
        """A friend named by identity, identity prefix (4+ characters) or name."""
        ref = ref.strip()
        with contextlib.suppress(DecodeError):
            raw = decode_id(ref, IdKind.IDENTITY)
            if raw in self._friends:
                return self._friends[raw]
            raise NotFoundError(f"no friend has the identity {ref}")
        lowered = ref.lower()
        matches = [f for f in self._friends.values() if f.name.lower() == lowered]
        if not matches and len(ref) >= 4:
            matches = [
                f for f in self._friends.values() if identity_text(f.verify_key).startswith(lowered)
            ]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise NotFoundError(f"no friend is called or starts with {ref!r}")
        listed = ", ".join(f"{f.name} ({identity_text(f.verify_key)[:12]})" for f in matches)
        raise AmbiguousError(f"{ref!r} could be any of: {listed}; use more of the identity")

    def person(self, key: bytes) -> Person:
        """Someone as the user sees them: ourselves, a friend by what we call them, else
        by what they call themselves (their hello), marked as not a friend."""
        key = self.person_of(key)  # a device of someone's is shown as them
        if key == self._me:
            return Person(identity=key, name=self.my_name, friend=True)
        friend = self._friends.get(key)
        if friend is not None:
            return Person(identity=key, name=friend.name, friend=friend.state is FriendState.FRIEND)
        name = self._names.get(key) or identity_text(key)[:8]
        return Person(identity=key, name=name, friend=False)

    # --- changing ----------------------------------------------------------------------

    async def set_my_name(self, name: str) -> str:
        """Change our display name; returns once it is on disk."""
        with user_input():
            name = check_display_name(name)
        await self._store.run(Store.set_name, name)
        self.my_name = name
        log.info("display name changed")
        return name

    async def rename(self, ref: str, name: str) -> FriendRecord:
        """Change what we call a friend."""
        friend = self.resolve(ref)
        with user_input():
            name = check_display_name(name)
        await self._store.run(Store.update_friend, friend.verify_key, name=name)
        await self._reload()
        self._events.publish("friend.renamed", identity=identity_text(friend.verify_key), name=name)
        return self._friends[friend.verify_key]

    async def remove(self, ref: str) -> FriendRecord:
        """Forget a friend (their link is dropped)."""
        friend = self.resolve(ref)
        # The removal is kept, with when, for our other devices (spec/devices.md 9).
        removed_at = max(int(time.time()), friend.since)
        await self._store.run(Store.remove_friend, friend.verify_key, removed_at)
        await self._reload()
        self._on_change(None, friend.verify_key)
        self._events.publish("friend.removed", identity=identity_text(friend.verify_key))
        return friend

    async def set_blocked(self, ref: str, blocked: bool) -> FriendRecord:
        """Block (refuse every link, forget addresses) or unblock a friend."""
        friend = self.resolve(ref)
        state = FriendState.BLOCKED if blocked else FriendState.FRIEND
        await self._store.run(Store.update_friend, friend.verify_key, state=state)
        await self._reload()
        now = self._friends[friend.verify_key]
        self._on_change(now, friend.verify_key)
        self._events.publish(
            "friend.blocked" if blocked else "friend.unblocked",
            identity=identity_text(friend.verify_key),
        )
        return now

    async def paired(self, friend: FriendRecord) -> bool:
        """A pairing completed: add the friend, or update their keys and name (our label
        and the date we met stay; a block is lifted: they scanned or showed a code).
        Returns True if they are new."""
        existing = self._friends.get(friend.verify_key)
        if existing is not None:
            friend = replace(friend, name=existing.name, since=existing.since)
        if friend.verify_key in self.removed:  # paired again: after the removal
            friend = replace(friend, since=max(friend.since, self.removed[friend.verify_key] + 1))
            await self._store.run(Store.forget_removal, friend.verify_key)
        is_new = await self._store.run(Store.upsert_friend, friend)
        if existing is not None and existing.state is FriendState.BLOCKED:
            await self._store.run(Store.update_friend, friend.verify_key, state=FriendState.FRIEND)
        await self._reload()
        self._on_change(self._friends[friend.verify_key], friend.verify_key)
        return is_new

    def shared(self) -> list[SharedFriend]:
        """Our friends, as we tell another device of ours (spec/devices.md section 9)."""
        return [
            SharedFriend(
                identity=f.verify_key,
                link_key=f.link_key,
                link_signature=f.link_signature,
                name=f.name,
                their_name=f.their_name or f.name,
                blocked=f.state is FriendState.BLOCKED,
                since=f.since,
            )
            for f in self._friends.values()
        ]

    async def from_our_device(
        self, my_name: str, friends: list[SharedFriend], removed: dict[bytes, int] | None = None
    ) -> int:
        """Another device of ours told us our name and friends: each is added, or takes
        the name and block it has there (the last device to tell wins); a friend whose
        identity does not vouch for its link key is skipped. A removal (friend -> when)
        removes the friend here unless we befriended them after it; a friend befriended
        before a removal we know is not added back (spec/devices.md section 9). How many
        changed."""
        if my_name and my_name != self.my_name:
            await self._store.run(Store.set_name, my_name)
            self.my_name = my_name
        changed = []
        for key, when in (removed or {}).items():
            mine = self._friends.get(key)
            if key == self._me or self.removed.get(key, -1) >= when:
                continue
            if mine is not None and mine.since > when:
                continue  # befriended here after that removal
            await self._store.run(Store.remove_friend, key, when)
            if mine is not None:
                changed.append(key)
        await self._reload()
        for f in friends:
            if f.identity == self._me or self.removed.get(f.identity, -1) >= f.since:
                continue
            try:
                PublicIdentity(
                    verify_key=VerifyKey(f.identity),
                    link_key=LinkPublicKey(f.link_key),
                    link_signature=f.link_signature,
                ).verify()
            except (BadSignatureError, ValueError):
                log.info("a friend from another device of ours does not verify: skipped")
                continue
            state = FriendState.BLOCKED if f.blocked else FriendState.FRIEND
            existing = self._friends.get(f.identity)
            if existing is None:
                record = FriendRecord(
                    verify_key=f.identity,
                    link_key=f.link_key,
                    link_signature=f.link_signature,
                    name=f.name,
                    their_name=f.their_name,
                    state=state,
                    since=f.since,
                    last_seen=None,
                    host=None,
                    port=None,
                )
                await self._store.run(Store.upsert_friend, record)
            elif (existing.name, existing.state) != (f.name, state):
                await self._store.run(Store.update_friend, f.identity, name=f.name, state=state)
            else:
                continue
            changed.append(f.identity)
        if changed:
            await self._reload()
            for key in changed:
                self._on_change(self._friends.get(key), key)
                if key not in self._friends:
                    self._events.publish("friend.removed", identity=identity_text(key))
        return len(changed)

    async def seen(
        self, key: bytes, *, host: str | None = None, port: int | None = None, name: str = ""
    ) -> None:
        """A friend linked (or its link ended): when, where it listens, what it calls
        itself now."""
        fields: dict[str, object] = {"last_seen": int(time.time())}
        if host is not None and port:
            fields.update(host=host, port=port)
        if name:
            fields["their_name"] = name
        if await self._store.run(Store.update_friend, key, **fields):
            await self._reload()
            if host is not None:
                self._on_change(self._friends.get(key), key)

    async def remember_name(self, key: bytes, name: str) -> None:
        """Keep the name someone we linked with gave in their hello (if it changed)."""
        if self._names.get(key) != name:
            await self._store.run(Store.remember_person, key, name, int(time.time()))
            self._names[key] = name
