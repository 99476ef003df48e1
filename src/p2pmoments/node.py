"""The node: one person's daemon minus the HTTP front door.

It owns the store, the peer listener, every link and every background task
(all in one TaskGroup, style.md rule 5), and decides who may link: friends,
and whoever presents a valid pairing token (spec/transport.md section 1,
spec/pairing.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import random
import secrets
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from p2pmoments import __version__
from p2pmoments.config import Address, Config
from p2pmoments.core.beacon import WINDOW, BeaconTable, beacon, window_of
from p2pmoments.core.crypto import VerifyKey
from p2pmoments.core.errors import DecodeError, P2PMomentsError
from p2pmoments.core.identity import Identity
from p2pmoments.core.ids import IdKind, decode_id, encode_id
from p2pmoments.core.link import (
    AcceptRequest,
    CloseCode,
    Closed,
    Established,
    Event,
    Link,
    LinkState,
    MessageReceived,
)
from p2pmoments.core.pairing import (
    PairingLink,
    check_not_self,
    decode_link,
    encode_link,
    token_psk,
)
from p2pmoments.core.profile import check_display_name
from p2pmoments.errors import AmbiguousError, FriendLimitError, NotFoundError
from p2pmoments.events import EventBus
from p2pmoments.moments import Moments
from p2pmoments.net.discovery import Discovery, Sighting
from p2pmoments.net.interfaces import lan_address
from p2pmoments.net.transport import LinkRunner
from p2pmoments.paths import Paths
from p2pmoments.replication import Replication
from p2pmoments.store import AsyncStore, FriendRecord, PairingRecord, Store

__all__ = [
    "ListenError",
    "Node",
    "Profile",
    "describe_bind_error",
]

log = logging.getLogger(__name__)

# Bounds on what strangers can make us hold (spec/transport.md section 1).
MAX_LINKS = 256
MAX_HANDSHAKING = 64
MAX_HANDSHAKING_PER_HOST = 16
MAX_CONCURRENT_DIALS = 16
DIAL_TIMEOUT = 5.0
BACKOFF_FIRST = 1.0
ABUSE_COOL_OFF = 60.0  # seconds a peer dropped for abuse may not link again
BACKOFF_MAX = 60.0
BACKOFF_JITTER = 0.2
DIALLER_IDLE = 30.0
MAX_SIGHTINGS = 1024
MAX_LIVE_CODES = 32  # unused pairing codes valid at once (each showing makes one)


class ListenError(P2PMomentsError):
    """A socket could not be bound."""


def describe_bind_error(what: str, address: Address, exc: OSError) -> ListenError:
    """A readable ListenError for a failed bind."""
    reason = {
        errno.EADDRINUSE: "the address is already in use (is another daemon running?)",
        errno.EADDRNOTAVAIL: "this machine has no such address",
        errno.EACCES: "permission denied (ports below 1024 need privileges)",
    }.get(exc.errno or 0, exc.strerror or str(exc))
    return ListenError(f"cannot listen {what} on {address}: {reason}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    """Who we are, as the API shows it."""

    name: str
    identity: str


@dataclass(slots=True)
class _Target:
    """Someone to dial: a friend, or the owner of a QR code we scanned."""

    verify_key: bytes
    link_key: bytes
    addresses: list[tuple[str, int]] = field(default_factory=list)
    pairing_id: int | None = None
    pairing_token: bytes | None = field(default=None, repr=False)  # a secret PSK
    expires: float | None = None
    failures: int = 0
    next_attempt: float = 0.0
    found_via: str = "address"


@dataclass(slots=True)
class _PeerInfo:
    runner: LinkRunner
    verify_key: bytes
    name: str
    since: float
    found_via: str


def _now() -> int:
    return int(time.time())


def identity_text(raw: bytes) -> str:
    """The text form of an identity's raw key."""
    return encode_id(raw, IdKind.IDENTITY)


class Node:
    """One person's daemon."""

    def __init__(
        self,
        *,
        paths: Paths,
        config: Config,
        identity: Identity,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.paths = paths
        self.config = config
        self.identity = identity
        self.me = bytes(identity.public.verify_key)
        self.store = AsyncStore(paths.db_file)
        self.events = EventBus()
        self.api_url: str | None = None
        self.started_at = time.time()
        self._clock = clock
        self._name = ""
        self._listen_addresses: list[str] = []
        self._listen_port: int | None = None
        self._stack: AsyncExitStack | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._friends: dict[bytes, FriendRecord] = {}
        self._tokens: dict[bytes, bytes] = {}  # psk -> token
        self._peers: dict[bytes, _PeerInfo] = {}
        self._handshaking: dict[LinkRunner, str] = {}
        self._cooling: dict[bytes, float] = {}  # link key -> until when it may not link
        self._evicted = 0  # idle half-open connections closed to make room
        self._failed_dials = 0  # dials that ended without a link
        self._targets: dict[bytes, _Target] = {}
        self._dialling: set[bytes] = set()
        self._wake = asyncio.Event()
        self._beacons = BeaconTable()
        self._background: list[asyncio.Task[None]] = []
        self._sightings: dict[bytes, tuple[Sighting, float]] = {}
        self.moments = Moments(self)
        self.replication = Replication(self)
        self._closing = False
        self.on_message: Callable[[bytes, dict[int, Any]], None] | None = None

    # --- lifecycle --------------------------------------------------------

    async def __aenter__(self) -> Node:
        async with AsyncExitStack() as stack:
            await self.store.open()
            stack.push_async_callback(self.store.close)
            self._name = await self.store.run(Store.get_name)
            await self._load_friends()
            await self._load_tokens()
            await self._load_pending_pairings()
            await self.moments.load()
            await self.replication.load()
            self.refresh_co_members()
            self._tg = await stack.enter_async_context(asyncio.TaskGroup())
            stack.push_async_callback(self._shutdown)
            server = await self._start_peer_server()
            stack.push_async_callback(server.wait_closed)
            stack.callback(server.close)
            self._add_static_peers()
            self._tg.create_task(self._dialler(), name="dialler")
            self._background.append(self._tg.create_task(self.moments.expiry_loop(), name="expiry"))
            if self.config.mdns:
                self._background.append(self._tg.create_task(self._discover(), name="discovery"))
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every link, stop every task, close the store; safe to call twice."""
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    async def _shutdown(self) -> None:
        self._closing = True
        self._wake.set()
        for task in self._background:  # run until cancelled
            task.cancel()
        for runner in [p.runner for p in self._peers.values()] + list(self._handshaking):
            runner.close(CloseCode.SHUTDOWN, "shutting down")

    def spawn(self, coro: Any, name: str) -> None:
        """Run `coro` in the node's TaskGroup."""
        if self._tg is None or self._closing:
            coro.close()
            return
        self._tg.create_task(coro, name=name)

    async def _start_peer_server(self) -> asyncio.Server:
        address = self.config.listen
        try:
            server = await asyncio.start_server(self._on_connection, address.host, address.port)
        except OSError as exc:
            raise describe_bind_error("for peers", address, exc) from None
        self._listen_addresses = [
            str(Address(host=sock.getsockname()[0], port=sock.getsockname()[1]))
            for sock in server.sockets
        ]
        self._listen_port = server.sockets[0].getsockname()[1]
        return server

    @property
    def name(self) -> str:
        """Our display name."""
        return self._name

    def friend(self, verify_key: bytes) -> FriendRecord | None:
        """A friend (or blocked identity) by raw key."""
        return self._friends.get(verify_key)

    @property
    def listen_addresses(self) -> list[str]:
        """Where peers can reach us, as HOST:PORT."""
        return list(self._listen_addresses)

    @property
    def listen_port(self) -> int | None:
        """The TCP port peers connect to."""
        return self._listen_port

    # --- state loading ------------------------------------------------------

    async def _load_friends(self) -> None:
        self._friends = {f.verify_key: f for f in await self.store.run(Store.friends)}

    async def _load_tokens(self) -> None:
        tokens = await self.store.run(Store.tokens, _now())
        self._tokens = {token_psk(t.token): t.token for t in tokens}

    async def _load_pending_pairings(self) -> None:
        for p in await self.store.run(Store.pairings):
            if p.direction == "out" and p.state == "pending" and p.identity is not None:
                self._add_pairing_target(p)

    def _co_member_by_link_key(self, link_key: bytes) -> bytes | None:
        """The identity of a co-member (same current circle as us) with this link key."""
        me = self.identity.public.verify_key
        for manifest in self.moments.circles():
            if not self.moments.member_of(manifest.circle_id):
                continue
            for member in manifest.members:
                if bytes(member.link_key) == link_key and member.verify_key != me:
                    return bytes(member.verify_key)
        return None

    def refresh_co_members(self) -> None:
        """Co-members become dial targets (found by mDNS; never friends by this); former
        co-members we no longer share a circle with stop being dialled."""
        me = self.identity.public.verify_key
        co_members: dict[bytes, bytes] = {}
        for manifest in self.moments.circles():
            if not self.moments.member_of(manifest.circle_id):
                continue
            for member in manifest.members:
                if member.verify_key != me:
                    co_members[bytes(member.verify_key)] = bytes(member.link_key)
        for key, target in list(self._targets.items()):
            if key not in co_members and key not in self._friends and target.pairing_id is None:
                del self._targets[key]
                self._drop_peer(key, "no longer in a circle together")
        for key, link_key in co_members.items():
            friend = self._friends.get(key)
            if key in self._targets or (friend is not None and friend.state == "blocked"):
                continue
            self._targets[key] = _Target(verify_key=key, link_key=link_key)
        self._match_sightings()

    def linked_peers(self) -> list[bytes]:
        """Identities we have an open link with."""
        return list(self._peers)

    def statistics(self) -> dict[str, int]:
        """A snapshot of the node's counters (also in GET /status)."""
        return {
            "links": len(self._peers),
            "handshaking": len(self._handshaking),
            "evicted": self._evicted,
            "failed_dials": self._failed_dials,
            "pairing_codes": len(self._tokens),
            "dial_targets": len(self._targets),
            "sync_messages": self.replication.handled,
        }

    def _friend_by_link_key(self, link_key: bytes) -> FriendRecord | None:
        for friend in self._friends.values():
            if friend.link_key == link_key:
                return friend
        return None

    # --- profile and status -------------------------------------------------

    async def profile(self) -> Profile:
        """Our name and identity."""
        return Profile(name=self._name, identity=self.identity.public.text)

    async def set_name(self, name: str) -> Profile:
        """Change our display name; returns once it is on disk."""
        name = check_display_name(name)
        await self.store.run(Store.set_name, name)
        self._name = name
        log.info("display name changed")
        return await self.profile()

    async def status(self) -> dict[str, Any]:
        """What `p2pmoments status --json` and GET /api/v1/status show."""
        counts = await self.store.run(Store.counts)
        return {
            "name": self._name,
            "identity": self.identity.public.text,
            "version": __version__,
            "pid": os.getpid(),
            "started_at": self.started_at,
            "listen": self.listen_addresses,
            "mdns": self.config.mdns,
            "api_url": self.api_url,
            "token_file": str(self.paths.token_file),
            "data_dir": str(self.paths.data_dir),
            "config_file": str(self.paths.config_file),
            "peers_connected": len(self._peers),
            "friends": counts.friends,
            "circles": counts.circles,
            "moments": counts.moments,
            "statistics": self.statistics(),
        }

    # --- friends --------------------------------------------------------------

    def friend_json(self, friend: FriendRecord) -> dict[str, Any]:
        """A friend as the API shows it."""
        return {
            "identity": identity_text(friend.verify_key),
            "name": friend.name,
            "their_name": friend.their_name,
            "state": friend.state,
            "since": friend.since,
            "last_seen": friend.last_seen,
            "connected": friend.verify_key in self._peers,
            "address": None
            if friend.host is None
            else str(Address(host=friend.host, port=friend.port or 0)),
        }

    def friends(self) -> list[FriendRecord]:
        """Friends and blocked identities, oldest first."""
        return sorted(self._friends.values(), key=lambda f: (f.since, f.name))

    def resolve_friend(self, ref: str) -> FriendRecord:
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

    async def rename_friend(self, ref: str, name: str) -> FriendRecord:
        """Change what we call a friend."""
        friend = self.resolve_friend(ref)
        name = check_display_name(name)
        await self.store.run(Store.update_friend, friend.verify_key, name=name)
        await self._load_friends()
        self.events.publish("friend.renamed", identity=identity_text(friend.verify_key), name=name)
        return self._friends[friend.verify_key]

    async def remove_friend(self, ref: str) -> FriendRecord:
        """Forget a friend and drop any link to them."""
        friend = self.resolve_friend(ref)
        await self.store.run(Store.remove_friend, friend.verify_key)
        self._friends.pop(friend.verify_key, None)
        self._targets.pop(friend.verify_key, None)
        self._drop_peer(friend.verify_key, "no longer friends")
        self.events.publish("friend.removed", identity=identity_text(friend.verify_key))
        return friend

    async def set_blocked(self, ref: str, blocked: bool) -> FriendRecord:
        """Block (refuse every link, forget addresses) or unblock a friend."""
        friend = self.resolve_friend(ref)
        state = "blocked" if blocked else "friend"
        await self.store.run(Store.update_friend, friend.verify_key, state=state)
        await self._load_friends()
        if blocked:
            self._targets.pop(friend.verify_key, None)
            self._drop_peer(friend.verify_key, "blocked")
        else:
            self._add_friend_target(self._friends[friend.verify_key])
            self._match_sightings()
        self.events.publish(
            "friend.blocked" if blocked else "friend.unblocked",
            identity=identity_text(friend.verify_key),
        )
        return self._friends[friend.verify_key]

    def _drop_peer(self, verify_key: bytes, reason: str) -> None:
        peer = self._peers.get(verify_key)
        if peer is not None:
            peer.runner.close(CloseCode.NOT_ACCEPTED, reason)

    def drop_misbehaving(self, verify_key: bytes, reason: str) -> None:
        """End a peer's link for abuse; neither side links again for a while."""
        peer = self._peers.get(verify_key)
        if peer is None or peer.runner.link.peer is None:
            return
        log.warning("dropping %s: %s", identity_text(verify_key)[:12], reason)
        now = self._clock()
        self._cooling = {k: until for k, until in self._cooling.items() if until > now}
        self._cooling[bytes(peer.runner.link.peer.link_key)] = now + ABUSE_COOL_OFF
        peer.runner.close(CloseCode.OVERLOAD, reason)

    async def send_paced(self, verify_key: bytes, body: dict[int, Any]) -> bool:
        """Send once the peer has taken most of what we sent before (bulk data: a slow
        peer slows its own transfers, never fills our memory); False if not linked."""
        info = self._peers.get(verify_key)
        if info is None:
            return False
        try:
            await info.runner.writable()
        except (ConnectionError, TimeoutError):
            return False
        return self.send(verify_key, body)

    # --- pairing: our code ------------------------------------------------------

    async def pairing_link(self) -> tuple[str, int]:
        """A fresh pairing link and its expiry: each showing is a code of its own, so a
        code shown to two friends in turn works for both (spec/pairing.md section 2).
        At most MAX_LIVE_CODES unused codes stay valid; older ones stop working."""
        now = _now()
        token, expires = secrets.token_bytes(16), now + self.config.pairing_ttl
        await self.store.run(Store.add_token, token, now, expires, keep=MAX_LIVE_CODES)
        await self._load_tokens()
        host, port = self._link_address()
        link = PairingLink(
            identity=self.identity.public.verify_key,
            link_key=self.identity.public.link_key,
            token=token,
            expires=expires,
            name=self._name,
            host=host,
            port=port,
        )
        return encode_link(link), expires

    def _link_address(self) -> tuple[str | None, int | None]:
        if self._listen_port is None:
            return None, None
        host: str | None = self.config.listen.host
        if host in ("0.0.0.0", "::"):  # noqa: S104 - we listen everywhere: offer a LAN address
            host = lan_address()
        return (host, self._listen_port) if host else (None, None)

    # --- pairing: a code we scanned -------------------------------------------

    async def pair(self, text: str) -> PairingRecord:
        """Start pairing with the owner of a scanned link; completes when we reach them."""
        link = decode_link(text)
        check_not_self(link, self.identity.public.verify_key)
        owner = bytes(link.identity)
        existing = self._friends.get(owner)
        if existing is None and self._friend_count() >= self.config.max_friends:
            raise FriendLimitError(
                f"you already have {self.config.max_friends} friends, the most allowed "
                "(friends.max in the config); remove one first"
            )
        if link.expires <= _now():
            raise DecodeError("this pairing code has expired: ask for a fresh one")
        now = _now()
        record = PairingRecord(
            id=0,
            direction="out",
            identity=owner,
            link_key=bytes(link.link_key),
            name=link.name,
            token=link.token,
            expires=link.expires,
            host=link.host,
            port=link.port,
            state="pending",
            reason="",
            created=now,
            updated=now,
        )
        pairing_id = await self.store.run(Store.add_pairing, record)
        record = PairingRecord(**{**_fields(record), "id": pairing_id})
        self._add_pairing_target(record)
        self._match_sightings()
        self.events.publish("pairing.pending", **self.pairing_json(record))
        self._wake.set()
        return record

    def _friend_count(self) -> int:
        return sum(1 for f in self._friends.values() if f.state == "friend")

    def pairing_json(self, p: PairingRecord) -> dict[str, Any]:
        """A pairing attempt as the API shows it."""
        return {
            "id": p.id,
            "direction": p.direction,
            "identity": None if p.identity is None else identity_text(p.identity),
            "name": p.name,
            "state": p.state,
            "reason": p.reason,
            "expires_at": p.expires,
            "created": p.created,
            "updated": p.updated,
        }

    async def pairings(self) -> list[PairingRecord]:
        """Recent pairing attempts, newest first."""
        return await self.store.run(Store.pairings)

    async def wait_pairing(self, pairing_id: int, timeout: float) -> PairingRecord | None:
        """The pairing once it is no longer pending, or as it is after `timeout`."""
        deadline = self._clock() + timeout
        last = self.events.last_id
        while True:
            record = next((p for p in await self.pairings() if p.id == pairing_id), None)
            remaining = deadline - self._clock()
            if record is None or record.state != "pending" or remaining <= 0:
                return record
            _, _ = await self.events.wait_after(last, remaining)
            last = self.events.last_id

    async def _set_pairing(self, p: PairingRecord | int, state: str, reason: str = "") -> None:
        pairing_id = p if isinstance(p, int) else p.id
        await self.store.run(Store.set_pairing_state, pairing_id, state, reason, _now())
        record = next((r for r in await self.pairings() if r.id == pairing_id), None)
        if record is not None:
            self.events.publish(f"pairing.{state}", **self.pairing_json(record))

    # --- dialling ------------------------------------------------------------------

    def _add_pairing_target(self, p: PairingRecord) -> None:
        assert p.identity is not None
        target = self._targets.get(p.identity) or _Target(
            verify_key=p.identity, link_key=p.link_key
        )
        target.link_key = p.link_key
        target.pairing_id = p.id
        target.pairing_token = token_psk(p.token)
        target.expires = p.expires
        target.next_attempt = 0.0
        target.failures = 0
        if p.host and p.port and (p.host, p.port) not in target.addresses:
            target.addresses.insert(0, (p.host, p.port))
        self._targets[p.identity] = target

    def _add_friend_target(self, friend: FriendRecord) -> None:
        if friend.state != "friend":
            return
        target = self._targets.get(friend.verify_key) or _Target(
            verify_key=friend.verify_key, link_key=friend.link_key
        )
        target.link_key = friend.link_key
        if friend.host and friend.port and (friend.host, friend.port) not in target.addresses:
            target.addresses.append((friend.host, friend.port))
        self._targets[friend.verify_key] = target

    def _add_static_peers(self) -> None:
        for friend in self._friends.values():
            self._add_friend_target(friend)
        for peer in self.config.peers:
            raw = decode_id(peer.identity, IdKind.IDENTITY)
            if raw not in self._friends:
                log.warning("static peer %s is not a friend: pair with them first", peer.identity)
                continue
            target = self._targets.get(raw)
            if target is not None:
                address = (peer.address.host, peer.address.port)
                if address in target.addresses:
                    target.addresses.remove(address)
                target.addresses.insert(0, address)
                target.found_via = "static"

    async def _discover(self) -> None:
        assert self._listen_port is not None
        discovery = Discovery(
            listen_host=self.config.listen.host,
            port=self._listen_port,
            own_beacon=lambda window: beacon(self.me, window),
            on_sighting=self._on_sighting,
        )
        try:
            await discovery.run()
        except OSError as exc:  # no multicast here: carry on with addresses we know
            log.warning("mDNS discovery is off: %s", exc)

    def _on_sighting(self, sighting: Sighting) -> None:
        # Remembered: a record is reported once, but we may learn whose it is later
        # (a code scanned after its owner's record was seen).
        self._sightings[sighting.beacon] = (sighting, time.time())
        while len(self._sightings) > MAX_SIGHTINGS:
            del self._sightings[next(iter(self._sightings))]
        self._match_sighting(sighting)

    def _match_sighting(self, sighting: Sighting) -> None:
        known = [k for k, f in self._friends.items() if f.state == "friend"]
        self._beacons.update([*known, *self._targets], window_of(time.time()))
        key = self._beacons.lookup(sighting.beacon)
        if key is not None and key != self.me:
            self.peer_seen(key, sighting.host, sighting.port, "mdns")

    def _match_sightings(self) -> None:
        """Look again at recent sightings: someone we just learned of may be among them."""
        horizon = time.time() - 2 * WINDOW
        for beacon_value, (sighting, seen) in list(self._sightings.items()):
            if seen < horizon:
                del self._sightings[beacon_value]
            else:
                self._match_sighting(sighting)

    def peer_seen(self, verify_key: bytes, host: str, port: int, via: str) -> None:
        """Discovery saw a known identity at an address: dial it soon."""
        target = self._targets.get(verify_key)
        if target is None:
            return
        if (host, port) in target.addresses:
            target.addresses.remove((host, port))
        target.addresses.insert(0, (host, port))
        target.found_via = via
        if verify_key not in self._peers:
            target.next_attempt = 0.0
            self._wake.set()

    def _backoff(self, target: _Target) -> None:
        target.failures += 1
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (target.failures - 1))
        jitter = 1 + random.uniform(-BACKOFF_JITTER, BACKOFF_JITTER)  # noqa: S311 - not crypto
        target.next_attempt = self._clock() + delay * jitter

    async def _dialler(self) -> None:
        while not self._closing:
            now = self._clock()
            wall = time.time()
            for key, target in list(self._targets.items()):
                if target.expires is not None and target.expires <= wall:
                    if target.pairing_id is not None:
                        await self._set_pairing(
                            target.pairing_id,
                            "expired",
                            "the code expired before we could reach them",
                        )
                    friend = self._friends.get(key)
                    if friend is None:
                        del self._targets[key]
                        continue
                    target.pairing_id = target.pairing_token = target.expires = None
            # A pending pairing dials even if linked: re-pairing may bring new keys.
            due = [
                t
                for t in self._targets.values()
                if t.addresses
                and t.next_attempt <= now
                and (t.verify_key not in self._peers or t.pairing_token is not None)
                and t.verify_key not in self._dialling
            ]
            for target in due[: max(0, MAX_CONCURRENT_DIALS - len(self._dialling))]:
                self._dialling.add(target.verify_key)
                self.spawn(self._dial(target), name=f"dial-{identity_text(target.verify_key)[:8]}")
            pending = [
                t.next_attempt
                for t in self._targets.values()
                if t.addresses and t.verify_key not in self._peers
            ]
            sleep = min([DIALLER_IDLE, *(max(0.0, n - now) for n in pending)])
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(sleep, 0.05)):
                    await self._wake.wait()

    async def _dial(self, target: _Target) -> None:
        try:
            for host, port in list(target.addresses):
                linked = target.verify_key in self._peers and target.pairing_token is None
                if linked or self._closing:
                    return
                try:
                    async with asyncio.timeout(DIAL_TIMEOUT):
                        reader, writer = await asyncio.open_connection(host, port)
                except (OSError, TimeoutError) as exc:
                    log.debug("dial %s:%s failed: %s", host, port, exc)
                    continue
                link = Link(
                    identity=self.identity,
                    name=self._name,
                    initiator=True,
                    now=self._clock(),
                    remote_link_key=target.link_key,
                    expected_peer=VerifyKey(target.verify_key),
                    pairing_token=target.pairing_token,
                    listen_port=self._listen_port,
                )
                runner = LinkRunner(link, reader, writer, self._on_event, clock=self._clock)
                runner.found_via = target.found_via
                runner.pairing_id = target.pairing_id
                await self._run(runner)
                closed = runner.closed
                if (
                    closed is not None
                    and closed.by_peer
                    and closed.code is CloseCode.PAIRING_REFUSED
                    and target.pairing_id is not None
                ):
                    # The owner says the code cannot be used: no point trying again.
                    await self._set_pairing(target.pairing_id, "refused", closed.reason)
                    target.pairing_id = target.pairing_token = target.expires = None
                    if target.verify_key not in self._friends:
                        self._targets.pop(target.verify_key, None)
                    return
                if link.peer is not None:
                    target.failures = 0
                    target.next_attempt = self._clock() + BACKOFF_FIRST
                    return
            self._failed_dials += 1
            self._backoff(target)
        finally:
            self._dialling.discard(target.verify_key)
            self._wake.set()

    # --- incoming connections ---------------------------------------------------

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer = writer.get_extra_info("peername")
        host = peer[0] if peer else "?"
        if self._closing or self._tg is None or not self._make_room(host):
            writer.transport.abort()  # say nothing, hold nothing
            return
        link = Link(
            identity=self.identity,
            name=self._name,
            initiator=False,
            now=self._clock(),
            pairing_tokens=list(self._tokens),
            listen_port=self._listen_port,
        )
        runner = LinkRunner(link, reader, writer, self._on_event, clock=self._clock)
        # Counted at once for the bounds above, and run in our TaskGroup (not in the
        # server's own task), so shutdown waits for it before closing the store.
        self._handshaking[runner] = host
        assert self._tg is not None
        self._tg.create_task(self._run(runner), name=f"link-in-{host}")

    def _make_room(self, host: str) -> bool:
        """Whether a new connection from `host` may start a handshake. At a handshake
        bound, the oldest connection that has not even sent message 1 is closed to make
        room: idle connections cannot keep a friend out (spec/transport.md section 9)."""
        for bound, crowd in (
            (MAX_HANDSHAKING_PER_HOST, [r for r, h in self._handshaking.items() if h == host]),
            (MAX_HANDSHAKING, list(self._handshaking)),
        ):
            if len(crowd) < bound:
                continue
            idle = [r for r in crowd if r.link.awaiting_first_message]
            if not idle:
                return False
            oldest = min(idle, key=lambda r: r.opened)
            del self._handshaking[oldest]
            oldest.abort()
            self._evicted += 1
        return len(self._peers) + len(self._handshaking) < MAX_LINKS

    async def _run(self, runner: LinkRunner) -> None:
        self._handshaking[runner] = runner.remote_host or "?"
        try:
            closed = await runner.run()
        except Exception:
            # A bug in handling one link must cost that link only, never the daemon.
            log.exception("link to %s failed", runner.remote_host)
            runner.close(CloseCode.PROTOCOL_ERROR, "internal error")
            closed = runner.closed or Closed(
                code=CloseCode.PROTOCOL_ERROR, reason="internal error", by_peer=False
            )
        finally:
            self._handshaking.pop(runner, None)
            peer = runner.link.peer
            if peer is not None:
                key = bytes(peer.verify_key)
                info = self._peers.get(key)
                if info is not None and info.runner is runner:
                    del self._peers[key]
                    self.replication.link_down(key)
                    self.events.publish(
                        "peer.disconnected",
                        identity=identity_text(key),
                        reason=runner.closed.reason if runner.closed else "",
                    )
                    if key in self._friends:
                        await self.store.run(Store.update_friend, key, last_seen=_now())
                        await self._load_friends()
                    target = self._targets.get(key)
                    if target is not None:
                        spread = random.uniform(0.5, 1.5)  # noqa: S311 - jitter, not crypto
                        target.next_attempt = max(
                            self._clock() + BACKOFF_FIRST * spread,
                            self._cooling.get(bytes(peer.link_key), 0.0),
                        )
                        self._wake.set()
        log.debug("link ended: %s", closed.reason)

    # --- link events --------------------------------------------------------------

    async def _on_event(self, runner: LinkRunner, event: Event) -> None:
        if isinstance(event, AcceptRequest):
            await self._decide(runner, event)
        elif isinstance(event, Established):
            await self._established(runner, event)
        elif isinstance(event, MessageReceived):
            peer = runner.link.peer
            if peer is None or self._peers.get(bytes(peer.verify_key), None) is None:
                return
            key = bytes(peer.verify_key)
            if self._peers[key].runner is not runner:
                return  # a duplicate link on its way out
            await self.replication.on_message(key, event.body)
            if self.on_message is not None:
                self.on_message(key, event.body)

    async def _decide(self, runner: LinkRunner, request: AcceptRequest) -> None:
        """Accept or refuse; the store is consulted, so the link may close meanwhile."""
        accept = await self._should_accept(runner, request)
        if runner.link.state is not LinkState.AWAIT_ACCEPT:
            return  # timed out or shut down while we looked things up
        if accept is True:
            runner.link.accept()
        elif accept is False:
            runner.link.refuse()
        else:
            runner.link.refuse_pairing(accept)  # a holder of our code learns why

    async def _should_accept(self, runner: LinkRunner, request: AcceptRequest) -> bool | str:
        """True to accept, False to refuse in silence, or why a pairing code was refused
        (said only to one who proved it holds the code)."""
        if request.pairing_token is not None:
            token = self._tokens.get(request.pairing_token)
            known = self._friend_by_link_key(request.link_key)
            if token is None:
                return False
            verdict = await self.store.run(Store.claim_token, token, request.link_key, _now())
            if (
                verdict == "ok"
                and known is None
                and self._friend_count() >= self.config.max_friends
            ):
                verdict = "full"
            if verdict != "ok":
                reason = {
                    "used": "this code was already used by another device",
                    "expired": "this code has expired",
                    "full": f"at the friend limit ({self.config.max_friends})",
                }[verdict]
                await self._record_incoming(request.link_key, token, "refused", reason)
                return reason
            runner.pairing_token = token
            return True
        if self._cooling.get(request.link_key, 0.0) > self._clock():
            return False  # dropped for abuse a moment ago
        friend = self._friend_by_link_key(request.link_key)
        if friend is not None:
            return friend.state == "friend"
        # A member of a circle we are both in may link for that circle's traffic alone.
        return self._co_member_by_link_key(request.link_key) is not None

    async def _record_incoming(
        self,
        link_key: bytes,
        token: bytes,
        state: str,
        reason: str,
        identity: bytes | None = None,
        name: str = "",
    ) -> None:
        now = _now()
        if state == "refused":
            # A refused daemon keeps retrying until the code expires: one record per
            # device and code, its time updated, rather than a row per attempt.
            for old in await self.store.run(Store.pairings):
                if (old.direction, old.state, old.link_key, old.token) == (
                    "in",
                    "refused",
                    link_key,
                    token,
                ):
                    await self.store.run(Store.set_pairing_state, old.id, state, reason, now)
                    return
        record = PairingRecord(
            id=0,
            direction="in",
            identity=identity,
            link_key=link_key,
            name=name,
            token=token,
            expires=now,
            host=None,
            port=None,
            state=state,
            reason=reason,
            created=now,
            updated=now,
        )
        record = PairingRecord(
            **{**_fields(record), "id": await self.store.run(Store.add_pairing, record)}
        )
        self.events.publish(f"pairing.{state}", **self.pairing_json(record))

    async def _established(self, runner: LinkRunner, event: Established) -> None:
        key = bytes(event.peer.verify_key)
        link_key = bytes(event.peer.link_key)
        host = runner.remote_host
        pairing_token, pairing_id = runner.pairing_token, runner.pairing_id
        if pairing_token is not None or pairing_id is not None:
            existing = self._friends.get(key)
            record = FriendRecord(
                verify_key=key,
                link_key=link_key,
                link_signature=event.peer.link_signature,
                name=existing.name if existing else event.name,
                their_name=event.name,
                state="friend",
                since=existing.since if existing else _now(),
                last_seen=_now(),
                host=host if not runner.link.initiator else None,
                port=event.listen_port if not runner.link.initiator else None,
            )
            if runner.link.initiator and existing is None:
                target = self._targets.get(key)
                if target and target.addresses:
                    record = FriendRecord(
                        **{
                            **_fields(record),
                            "host": target.addresses[0][0],
                            "port": target.addresses[0][1],
                        }
                    )
            is_new = await self.store.run(Store.upsert_friend, record)
            await self._load_friends()
            if existing is not None and existing.state == "blocked":
                await self.store.run(Store.update_friend, key, state="friend")
                await self._load_friends()
            if pairing_id is not None:
                await self._set_pairing(pairing_id, "confirmed")
                target = self._targets.get(key)
                if target is not None:
                    target.pairing_id = target.pairing_token = target.expires = None
            else:
                assert pairing_token is not None
                await self._record_incoming(
                    link_key, pairing_token, "confirmed", "", key, event.name
                )
            self._add_friend_target(self._friends[key])
            if is_new:
                self.events.publish("friend.added", **self.friend_json(self._friends[key]))
        else:
            friend = self._friends.get(key)
            co_member = self._co_member_by_link_key(link_key) == key
            if friend is not None and friend.state != "friend":
                runner.close(CloseCode.NOT_ACCEPTED, "blocked")
                return
            if (friend is None or friend.link_key != link_key) and not co_member:
                runner.close(CloseCode.WRONG_IDENTITY, "neither a friend nor a co-member")
                return
            if friend is not None and not runner.link.initiator and event.listen_port and host:
                # Remember where they listen, to dial them next time.
                await self.store.run(
                    Store.update_friend,
                    key,
                    host=host,
                    port=event.listen_port,
                    last_seen=_now(),
                    their_name=event.name,
                )
                await self._load_friends()
                self._add_friend_target(self._friends[key])
        await self.moments.remember_name(key, event.name)
        self._register(runner, key, event.name)
        info = self._peers.get(key)
        if info is not None and info.runner is runner:
            await self.replication.link_up(key)

    def _register(self, runner: LinkRunner, key: bytes, name: str) -> None:
        if runner.link.initiator:
            self._dialling.discard(key)  # the dial is over; the link lives on
        existing = self._peers.get(key)
        if existing is not None and existing.runner is not runner:
            # One link per pair: both sides keep the link dialled by the lower identity
            # (spec/transport.md section 8); a redial by the same side replaces the old one.
            def dialler(r: LinkRunner) -> bytes:
                return self.me if r.link.initiator else key

            if dialler(existing.runner) == dialler(runner):
                loser = existing.runner
            else:
                loser = max((existing.runner, runner), key=dialler)
            if loser is runner:
                runner.close(CloseCode.REPLACED, "duplicate link")
                return
            existing.runner.close(CloseCode.REPLACED, "duplicate link")
        self._peers[key] = _PeerInfo(
            runner=runner, verify_key=key, name=name, since=time.time(), found_via=runner.found_via
        )
        # A link, no longer a handshake: it stops counting against the handshake bounds
        # (before this, a host could hold at most 16 links to us, of any kind).
        self._handshaking.pop(runner, None)
        self.events.publish("peer.connected", identity=identity_text(key), name=name)

    # --- peers ----------------------------------------------------------------------

    def peers_json(self) -> list[dict[str, Any]]:
        """Who is connected, since when, found how, and bytes each way."""
        out = []
        for info in self._peers.values():
            friend = self._friends.get(info.verify_key)
            link = info.runner.link
            out.append(
                {
                    "identity": identity_text(info.verify_key),
                    "name": friend.name if friend else info.name,
                    "since": info.since,
                    "found_via": info.found_via,
                    "direction": "out" if link.initiator else "in",
                    "address": None
                    if info.runner.remote_host is None
                    else str(
                        Address(host=info.runner.remote_host, port=info.runner.remote_port or 0)
                    ),
                    "bytes_in": link.bytes_in,
                    "bytes_out": link.bytes_out,
                }
            )
        return sorted(out, key=lambda p: p["since"])

    def send(self, verify_key: bytes, body: dict[int, Any]) -> bool:
        """Send an application message to a connected peer; False if not connected."""
        info = self._peers.get(verify_key)
        if (
            info is None
            or info.runner.closed is not None
            or info.runner.link.state is not LinkState.OPEN
        ):
            return False
        info.runner.send(body)
        return True


def _fields(record: Any) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__dataclass_fields__}
