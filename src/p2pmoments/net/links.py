"""Links to peers: the listener, the dialler and its targets, who is linked, and the
bounds on what strangers can make us hold (spec/transport.md sections 1, 8, 9).

A link is carried over the LAN, to a static address, or through Tor (spec/tor.md
section 7): the dialler tries a peer's IP addresses first and its onion address last,
and while a peer is linked through Tor it keeps trying the direct ones, so a LAN link
takes over as soon as there is one (core.admission.keep_new_link prefers it). Links
through our onion service arrive on a listener of their own on loopback, so both
sides know which links are over Tor.

The decisions are the core's (core.admission: who gets an answer, which connection
makes room, which of two links stays); who is who is the daemon's (a `LinkHandler`:
friends, pairing codes, circles). This module runs the connections.

Why so long: the listener, the dialler with its targets and backoff, and the links
themselves share one registry of who is linked and who is arriving, which must change
in one place for the bounds and the one-link-per-peer rule to hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import ipaddress
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from p2pmoments.config import Address
from p2pmoments.core import admission
from p2pmoments.core.admission import Admission, Half, Verdict
from p2pmoments.core.beacon import WINDOW, BeaconTable, window_of
from p2pmoments.core.crypto import VerifyKey
from p2pmoments.core.errors import P2PMomentsError
from p2pmoments.core.identity import Identity
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
from p2pmoments.core.onion import OnionAddress, backoff_delay
from p2pmoments.net.discovery import Sighting
from p2pmoments.net.transport import LinkRunner

__all__ = [
    "BACKOFF_FIRST",
    "MAX_HANDSHAKING",
    "MAX_HANDSHAKING_PER_HOST",
    "MAX_LINKS",
    "Hello",
    "LinkHandler",
    "Links",
    "ListenError",
    "OnionDial",
    "PeerInfo",
    "describe_bind_error",
]

log = logging.getLogger(__name__)

# Bounds on what strangers can make us hold (spec/transport.md section 9).
MAX_LINKS = 256
MAX_HANDSHAKING = 64
MAX_HANDSHAKING_PER_HOST = 16
MAX_CONCURRENT_DIALS = 16
DIAL_TIMEOUT = 5.0
BACKOFF_FIRST = 1.0
ABUSE_COOL_OFF = 60.0  # seconds a peer dropped for abuse may not link again
DIALLER_IDLE = 30.0
MAX_SIGHTINGS = 1024
# While linked through Tor, the direct addresses are tried again this often at most
# (an mDNS sighting tries at once): a LAN link should take over, a stale address cost
# little.
UPGRADE_BACKOFF_MAX = 300.0
TOR_HOST = "tor"  # the handshake bounds count links through our onion service as one host

# Opens a stream to an onion service's peer port (the node's tor: spec/tor.md).
OnionDial = Callable[[OnionAddress], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


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
class Hello:
    """A link whose handshake and hellos are done: who it is, and why it exists."""

    key: bytes
    link_key: bytes
    link_signature: bytes
    name: str
    listen_port: int | None
    host: str | None  # None over Tor
    initiator: bool
    pairing_id: int | None  # we dialled to complete this pairing
    pairing_token: bytes | None  # they used this code of ours
    path: str = "lan"  # lan, static or tor
    person: bytes = b""  # the person `key` says it is a device of (checked by the daemon)
    knows_devices: bool = False  # its hello said so (spec/devices.md section 8)


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerInfo:
    """A linked peer, as `peers` shows it."""

    key: bytes
    name: str
    since: float
    found_via: str
    initiator: bool
    host: str | None
    port: int | None
    bytes_in: int
    bytes_out: int
    path: str = "lan"  # lan, static or tor


class LinkHandler(Protocol):
    """What the links ask of the daemon."""

    async def admit(self, link_key: bytes, pairing_psk: bytes | None) -> Admission:
        """Whether to answer an initiator that finished message 1."""

    async def established(self, hello: Hello) -> tuple[CloseCode, str] | None:
        """A link's hellos are done: None to keep it, or why to close it."""

    async def linked(self, key: bytes) -> None:
        """A link is registered (the only one to this peer)."""

    async def message(self, key: bytes, body: dict[int, Any]) -> None:
        """An application message from a linked peer."""

    async def unlinked(self, key: bytes, closed: Closed) -> None:
        """A registered link ended."""

    async def pairing_ended(self, pairing_id: int, refused: str | None) -> None:
        """A code we scanned expired (refused None) or its owner refused it (why)."""


@dataclass(slots=True)
class _Target:
    """Someone to dial: a friend, a co-member, or the owner of a code we scanned."""

    verify_key: bytes
    link_key: bytes
    addresses: list[tuple[str, int]] = field(default_factory=list)
    onion: OnionAddress | None = None  # dialled through Tor, after the addresses
    static: set[tuple[str, int]] = field(default_factory=set)  # configured addresses
    pairing_id: int | None = None
    pairing_psk: bytes | None = field(default=None, repr=False)  # a secret
    expires: float | None = None
    failures: int = 0
    next_attempt: float = 0.0
    direct_failures: int = 0  # while linked through Tor: tries of the direct addresses
    next_direct: float = 0.0
    found_via: str = "address"


@dataclass(slots=True)
class _Linked:
    runner: LinkRunner
    name: str
    since: float
    found_via: str

    @property
    def over_tor(self) -> bool:
        return self.runner.path == "tor"


def path_of(host: str, *, static: bool) -> str:
    """What carries a direct link to `host`: a configured static address, or an address
    on this network (private, link-local or loopback: "lan"; anything else: "static")."""
    if static:
        return "static"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return "lan"  # localhost
    return "lan" if ip.is_private or ip.is_link_local or ip.is_loopback else "static"


class Links:
    """Every connection of one daemon."""

    def __init__(
        self,
        identity: Identity,
        handler: LinkHandler,
        *,
        spawn: Callable[[Coroutine[Any, Any, None], str], None],
        name: Callable[[], str],
        pairing_psks: Callable[[], list[bytes]],
        clock: Callable[[], float] = time.monotonic,
        person: bytes | None = None,
    ) -> None:
        self._identity = identity
        self._person = person  # the person we are a device of (spec/devices.md); None: us
        self._me = bytes(identity.public.verify_key)
        self._handler = handler
        self._spawn = spawn
        self._name = name
        self._pairing_psks = pairing_psks
        self._clock = clock
        self._linked: dict[bytes, _Linked] = {}
        self._handshaking: dict[LinkRunner, str] = {}
        self._cooling: dict[bytes, float] = {}  # link key -> until when it may not link
        self._targets: dict[bytes, _Target] = {}
        self._dialling: set[bytes] = set()
        self._arriving: set[bytes] = set()  # links whose hellos are being looked at
        self._wake = asyncio.Event()
        self._beacons = BeaconTable()
        self._sightings: dict[bytes, tuple[Sighting, float]] = {}
        self._closing = False
        self._evicted = 0
        self._failed_dials = 0
        self._onion_dial: OnionDial | None = None
        self._tor_ready: Callable[[], bool] = lambda: False
        self.listen_port: int | None = None
        self.listen_addresses: list[str] = []
        self.onion_port: int | None = None  # where our onion service's streams arrive

    # --- the listener --------------------------------------------------------------------

    async def listen(self, address: Address) -> asyncio.Server:
        """Start taking connections at `address`."""
        try:
            server = await asyncio.start_server(self._on_connection, address.host, address.port)
        except OSError as exc:
            raise describe_bind_error("for peers", address, exc) from None
        self.listen_addresses = [
            str(Address(host=s.getsockname()[0], port=s.getsockname()[1])) for s in server.sockets
        ]
        self.listen_port = server.sockets[0].getsockname()[1]
        return server

    async def listen_onion(self) -> asyncio.Server:
        """Take the streams our onion service forwards on a loopback port of their own
        (tor connects to it): links through it are known to be over Tor."""
        address = Address(host="127.0.0.1", port=0)
        try:
            server = await asyncio.start_server(
                functools.partial(self._on_connection, over_tor=True), address.host, address.port
            )
        except OSError as exc:
            raise describe_bind_error("for our onion service", address, exc) from None
        self.onion_port = server.sockets[0].getsockname()[1]
        return server

    def use_tor(self, dial: OnionDial, ready: Callable[[], bool]) -> None:
        """Dial onion addresses with `dial` whenever `ready()` says tor can."""
        self._onion_dial, self._tor_ready = dial, ready

    def tor_changed(self) -> None:
        """Tor came up or went: look again at whom to dial (those with an onion address
        and no link at once: their dials failed for want of tor)."""
        if self._tor_ready():
            for target in self._targets.values():
                if target.onion is not None and target.verify_key not in self._linked:
                    target.next_attempt, target.failures = 0.0, 0
        self._wake.set()

    def close_all(self) -> None:
        """Stop dialling and say goodbye on every link (shutdown)."""
        self._closing = True
        self._wake.set()
        for runner in [p.runner for p in self._linked.values()] + list(self._handshaking):
            runner.close(CloseCode.SHUTDOWN, "shutting down")

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, over_tor: bool = False
    ) -> None:
        peer = writer.get_extra_info("peername")
        host = TOR_HOST if over_tor else peer[0] if peer else "?"
        if self._closing or not self._make_room(host):
            writer.transport.abort()  # say nothing, hold nothing
            return
        link = Link(
            identity=self._identity,
            name=self._name(),
            initiator=False,
            now=self._clock(),
            pairing_tokens=self._pairing_psks(),
            listen_port=self.listen_port,
            person=self._person,
        )
        runner = LinkRunner(link, reader, writer, self._on_event, clock=self._clock)
        if over_tor:
            runner.over_tor()
        else:
            runner.path = path_of(host, static=False)
        # Counted at once for the bounds, and run in the daemon's TaskGroup (not in the
        # server's own task), so shutdown waits for it before the store closes.
        self._handshaking[runner] = host
        self._spawn(self._run(runner), f"link-in-{host}")

    def _make_room(self, host: str) -> bool:
        ok, evict = admission.make_room(
            [
                Half(
                    conn=r,
                    host=h,
                    opened=r.opened,
                    awaiting_first_message=r.link.awaiting_first_message,
                )
                for r, h in self._handshaking.items()
            ],
            host,
            links=len(self._linked),
            max_links=MAX_LINKS,
            max_handshakes=MAX_HANDSHAKING,
            max_per_host=MAX_HANDSHAKING_PER_HOST,
        )
        for runner in evict if ok else []:
            del self._handshaking[runner]
            runner.abort()
            self._evicted += 1
        return ok

    # --- running a link ------------------------------------------------------------------

    async def _run(self, runner: LinkRunner) -> None:
        self._handshaking[runner] = TOR_HOST if runner.path == "tor" else runner.remote_host or "?"
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
                info = self._linked.get(key)
                if info is not None and info.runner is runner:
                    del self._linked[key]
                    ended = runner.closed or Closed(code=CloseCode.NORMAL, reason="", by_peer=True)
                    await self._handler.unlinked(key, ended)
                    target = self._targets.get(key)
                    if target is not None:
                        spread = random.uniform(0.5, 1.5)  # noqa: S311 - jitter, not crypto
                        target.next_attempt = max(
                            self._clock() + BACKOFF_FIRST * spread,
                            self._cooling.get(bytes(peer.link_key), 0.0),
                        )
                        self._wake.set()
        log.debug("link ended: %s", closed.reason)

    async def _on_event(self, runner: LinkRunner, event: Event) -> None:
        if isinstance(event, AcceptRequest):
            verdict = await self._handler.admit(event.link_key, event.pairing_token)
            if runner.link.state is not LinkState.AWAIT_ACCEPT:
                return  # timed out or shut down while we looked things up
            if verdict.verdict is Verdict.ACCEPT:
                runner.pairing_token = event.pairing_token
                runner.link.accept()
            elif verdict.verdict is Verdict.REFUSE:
                runner.link.refuse()
            else:
                runner.link.refuse_pairing(verdict.reason)  # a holder of our code learns why
        elif isinstance(event, Established):
            await self._established(runner, event)
        elif isinstance(event, MessageReceived):
            peer = runner.link.peer
            if peer is None:
                return
            key = bytes(peer.verify_key)
            info = self._linked.get(key)
            if info is not None and info.runner is runner:  # not a duplicate on its way out
                await self._handler.message(key, event.body)

    async def _established(self, runner: LinkRunner, event: Established) -> None:
        key = bytes(event.peer.verify_key)
        hello = Hello(
            key=key,
            link_key=bytes(event.peer.link_key),
            link_signature=event.peer.link_signature,
            name=event.name,
            listen_port=event.listen_port,
            host=runner.remote_host,
            initiator=runner.link.initiator,
            pairing_id=runner.pairing_id,
            pairing_token=runner.pairing_token,
            path=runner.path,
            person=event.person or key,
            knows_devices=event.knows_devices,
        )
        # While the daemon looks at who this is (it may await the store) and a link it
        # replaces is let go, nobody dials the peer: a second link would only be dropped
        # again by the tie-break.
        self._arriving.add(key)
        try:
            refusal = await self._handler.established(hello)
            if refusal is not None:
                runner.close(*refusal)
                return
            if runner.link.initiator:
                self._dialling.discard(key)  # the dial is over; the link lives on
            existing = self._linked.get(key)
            if existing is not None and existing.runner is not runner:
                # One link per pair (spec/transport.md section 8), direct before Tor.
                if not admission.keep_new_link(
                    self._me,
                    key,
                    old_dialled_by_us=existing.runner.link.initiator,
                    new_dialled_by_us=runner.link.initiator,
                    old_over_tor=existing.over_tor,
                    new_over_tor=runner.path == "tor",
                ):
                    runner.close(CloseCode.REPLACED, "duplicate link")
                    return
                reason = (
                    f"replaced by a link over {runner.path}"
                    if existing.runner.path != runner.path
                    else "duplicate link"
                )
                existing.runner.close(CloseCode.REPLACED, reason)
                del self._linked[key]
                # What was under way on the old link (chunks asked on it) starts again on
                # the new one: the daemon hears that the old one ended.
                await self._handler.unlinked(
                    key, Closed(code=CloseCode.REPLACED, reason=reason, by_peer=False)
                )
            if runner.closed is not None or runner.link.state is not LinkState.OPEN:
                return  # it ended while we looked
            self._linked[key] = _Linked(
                runner=runner, name=event.name, since=time.time(), found_via=runner.found_via
            )
            # A link, no longer a handshake: it stops counting against the handshake bounds
            # (before, a host could hold at most 16 links to us, of any kind).
            self._handshaking.pop(runner, None)
        finally:
            self._arriving.discard(key)
        await self._handler.linked(key)

    # --- sending ------------------------------------------------------------------------

    def send(self, key: bytes, body: dict[int, Any]) -> bool:
        """Send an application message to a linked peer; False if not linked."""
        info = self._linked.get(key)
        if info is None or info.runner.closed is not None:
            return False
        if info.runner.link.state is not LinkState.OPEN:
            return False
        info.runner.send(body)
        return True

    async def send_paced(self, key: bytes, body: dict[int, Any]) -> bool:
        """Send once the peer has taken most of what we sent before (bulk data: a slow
        peer slows its own transfers, never fills our memory); False if not linked."""
        info = self._linked.get(key)
        if info is None:
            return False
        try:
            await info.runner.writable()
        except (ConnectionError, TimeoutError):
            return False
        return self.send(key, body)

    def linked(self) -> list[bytes]:
        """Identities we have an open link with."""
        return list(self._linked)

    def peers(self) -> list[PeerInfo]:
        """Who is linked, since when, found how, bytes each way; oldest first."""
        out = [
            PeerInfo(
                key=key,
                name=info.name,
                since=info.since,
                found_via=info.found_via,
                initiator=info.runner.link.initiator,
                host=info.runner.remote_host,
                port=info.runner.remote_port,
                bytes_in=info.runner.link.bytes_in,
                bytes_out=info.runner.link.bytes_out,
                path=info.runner.path,
            )
            for key, info in self._linked.items()
        ]
        return sorted(out, key=lambda p: p.since)

    def drop(self, key: bytes, reason: str) -> None:
        """End the link to a peer (no longer a friend, blocked, no circle in common)."""
        info = self._linked.get(key)
        if info is not None:
            info.runner.close(CloseCode.NOT_ACCEPTED, reason)

    def drop_misbehaving(self, key: bytes, reason: str) -> None:
        """End a peer's link for abuse; neither side links again for a while."""
        info = self._linked.get(key)
        if info is None or info.runner.link.peer is None:
            return
        log.warning("dropping a peer: %s", reason)
        now = self._clock()
        self._cooling = {k: until for k, until in self._cooling.items() if until > now}
        self._cooling[bytes(info.runner.link.peer.link_key)] = now + ABUSE_COOL_OFF
        info.runner.close(CloseCode.OVERLOAD, reason)

    def cooling(self, link_key: bytes) -> bool:
        """True if the holder of `link_key` was dropped for abuse a moment ago."""
        return self._cooling.get(link_key, 0.0) > self._clock()

    def path(self, key: bytes) -> str | None:
        """What carries our link to `key` (lan, static, tor), None if not linked."""
        info = self._linked.get(key)
        return None if info is None else info.runner.path

    def statistics(self) -> dict[str, int]:
        """A snapshot of the link counters."""
        return {
            "links": len(self._linked),
            "links_over_tor": sum(1 for info in self._linked.values() if info.over_tor),
            "handshaking": len(self._handshaking),
            "evicted": self._evicted,
            "failed_dials": self._failed_dials,
            "dial_targets": len(self._targets),
            "sightings": len(self._sightings),
        }

    # --- whom to dial ------------------------------------------------------------------

    def want(
        self,
        key: bytes,
        link_key: bytes,
        *,
        address: tuple[str, int] | None = None,
        via: str | None = None,
        first: bool = False,
        onion: OnionAddress | None = None,
    ) -> None:
        """Dial `key` (a friend or co-member), at `address` too if given (first in line
        with `first`, as a configured static address is: `via="static"`), and at `onion`
        through Tor when no address answers."""
        target = self._targets.get(key) or _Target(verify_key=key, link_key=link_key)
        target.link_key = link_key
        if onion is not None:
            target.onion = onion
        if address is not None and via == "static":
            target.static.add(address)
        if address is not None:
            if address in target.addresses and first:
                target.addresses.remove(address)
            if address not in target.addresses:
                target.addresses.insert(0, address) if first else target.addresses.append(address)
        if via is not None:
            target.found_via = via
        self._targets[key] = target
        self._match_sightings()

    def want_pairing(
        self,
        key: bytes,
        link_key: bytes,
        *,
        pairing_id: int,
        psk: bytes,
        expires: int,
        address: tuple[str, int] | None,
        onion: OnionAddress | None = None,
    ) -> None:
        """Dial the owner of a code we scanned, with its token, until it expires: at the
        code's address, then through Tor at its onion address."""
        target = self._targets.get(key) or _Target(verify_key=key, link_key=link_key)
        target.link_key = link_key
        target.pairing_id, target.pairing_psk, target.expires = pairing_id, psk, expires
        target.next_attempt, target.failures = 0.0, 0
        if onion is not None:
            target.onion = onion
        if address is not None and address not in target.addresses:
            target.addresses.insert(0, address)
        self._targets[key] = target
        self._match_sightings()
        self._wake.set()

    def set_onion(self, key: bytes, onion: OnionAddress) -> None:
        """We learned where `key` is reachable through Tor (its reach card)."""
        target = self._targets.get(key)
        if target is None or target.onion == onion:
            return
        target.onion = onion
        if key not in self._linked:
            target.next_attempt, target.failures = 0.0, 0
            self._wake.set()

    def onion_of(self, key: bytes) -> OnionAddress | None:
        """The onion address we dial `key` at, if any."""
        target = self._targets.get(key)
        return None if target is None else target.onion

    def forget(self, key: bytes, reason: str = "") -> None:
        """Stop dialling `key`, and end its link if `reason` is given."""
        self._targets.pop(key, None)
        if reason:
            self.drop(key, reason)

    def targets(self) -> set[bytes]:
        """Whom we dial."""
        return set(self._targets)

    def pairing_target(self, key: bytes) -> bool:
        """True while we dial `key` to complete a pairing."""
        target = self._targets.get(key)
        return target is not None and target.pairing_id is not None

    def pairing_done(self, key: bytes) -> None:
        """The pairing we dialled `key` for is over: dial it as a friend from now on."""
        target = self._targets.get(key)
        if target is not None:
            target.pairing_id = target.pairing_psk = target.expires = None

    def first_address(self, key: bytes) -> tuple[str, int] | None:
        """The address we reach `key` at first, if we know one."""
        target = self._targets.get(key)
        return target.addresses[0] if target and target.addresses else None

    def sighted(self, sighting: Sighting) -> None:
        """Discovery saw a beacon at an address; if it is someone we dial, dial it soon."""
        # Remembered: a record is reported once, but we may learn whose it is later (a
        # code scanned after its owner's record was seen).
        self._sightings[sighting.beacon] = (sighting, time.time())
        while len(self._sightings) > MAX_SIGHTINGS:
            del self._sightings[next(iter(self._sightings))]
        self._match_sighting(sighting)

    def _match_sighting(self, sighting: Sighting) -> None:
        self._beacons.update(list(self._targets), window_of(time.time()))
        key = self._beacons.lookup(sighting.beacon)
        if key is not None and key != self._me:
            self.seen(key, sighting.host, sighting.port, "mdns")

    def _match_sightings(self) -> None:
        """Look again at recent sightings: someone we just learned of may be among them."""
        horizon = time.time() - 2 * WINDOW
        for beacon_value, (sighting, seen) in list(self._sightings.items()):
            if seen < horizon:
                del self._sightings[beacon_value]
            else:
                self._match_sighting(sighting)

    def seen(self, key: bytes, host: str, port: int, via: str) -> None:
        """Someone we dial was seen at an address: dial it there, soon."""
        target = self._targets.get(key)
        if target is None:
            return
        if (host, port) in target.addresses:
            target.addresses.remove((host, port))
        target.addresses.insert(0, (host, port))
        target.found_via = via
        linked = self._linked.get(key)
        if linked is None:
            target.next_attempt = 0.0
            self._wake.set()
        elif linked.over_tor:  # a direct link can take over: try it now
            target.next_direct, target.direct_failures = 0.0, 0
            self._wake.set()

    # --- the dialler ------------------------------------------------------------------

    async def dial_forever(self) -> None:
        """Dial whoever is due, until shutdown."""
        while not self._closing:
            now = self._clock()
            wall = time.time()
            for target in list(self._targets.values()):
                if target.expires is not None and target.expires <= wall:
                    pairing_id = target.pairing_id
                    target.pairing_id = target.pairing_psk = target.expires = None
                    if pairing_id is not None:
                        await self._handler.pairing_ended(pairing_id, None)
            tor = self._tor_ready()
            due: list[tuple[_Target, bool]] = []  # (target, only its direct addresses)
            pending: list[float] = []
            for t in self._targets.values():
                linked = self._linked.get(t.verify_key)
                busy = t.verify_key in self._dialling or t.verify_key in self._arriving
                # A pending pairing dials even if linked: re-pairing may bring new keys.
                if linked is None or t.pairing_psk is not None:
                    if t.addresses or (t.onion is not None and tor):
                        pending.append(t.next_attempt)
                        if t.next_attempt <= now and not busy:
                            due.append((t, False))
                elif linked.over_tor and t.addresses:
                    pending.append(t.next_direct)
                    if t.next_direct <= now and not busy:
                        due.append((t, True))
            for target, direct in due[: max(0, MAX_CONCURRENT_DIALS - len(self._dialling))]:
                self._dialling.add(target.verify_key)
                self._spawn(
                    self._dial(target, direct_only=direct),
                    f"dial-{target.verify_key.hex()[:8]}",
                )
            sleep = min([DIALLER_IDLE, *(max(0.0, n - now) for n in pending)])
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(sleep, 0.05)):
                    await self._wake.wait()

    def _dialled_enough(self, target: _Target, direct_only: bool) -> bool:
        """Whether a link makes this dial pointless: any link for a plain dial, a direct
        one for a dial that would replace a link over Tor."""
        if target.pairing_psk is not None:
            return False
        linked = self._linked.get(target.verify_key)
        return linked is not None and not (direct_only and linked.over_tor)

    async def _connect(
        self, route: tuple[str, int] | OnionAddress
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """A stream to an address, or through tor to an onion; None if it cannot be had."""
        if isinstance(route, OnionAddress):
            if self._onion_dial is None or not self._tor_ready():
                return None
            try:
                return await self._onion_dial(route)
            except (OSError, TimeoutError, P2PMomentsError) as exc:
                log.debug("dial %r through tor failed: %s", route, exc)
                return None
            except Exception:
                # Whatever tor or its library does, it costs this dial only.
                log.exception("dial %r through tor failed", route)
                return None
        host, port = route
        try:
            async with asyncio.timeout(DIAL_TIMEOUT):
                return await asyncio.open_connection(host, port)
        except (OSError, TimeoutError) as exc:
            log.debug("dial %s:%s failed: %s", host, port, exc)
            return None

    async def _dial(self, target: _Target, *, direct_only: bool = False) -> None:
        try:
            routes: list[tuple[str, int] | OnionAddress] = list(target.addresses)
            if target.onion is not None and not direct_only:
                routes.append(target.onion)  # Tor last: the LAN first, when it works
            for route in routes:
                if self._closing or self._dialled_enough(target, direct_only):
                    return
                streams = await self._connect(route)
                if streams is None:
                    continue
                reader, writer = streams
                link = Link(
                    identity=self._identity,
                    name=self._name(),
                    initiator=True,
                    now=self._clock(),
                    remote_link_key=target.link_key,
                    expected_peer=VerifyKey(target.verify_key),
                    pairing_token=target.pairing_psk,
                    listen_port=self.listen_port,
                    person=self._person,
                )
                runner = LinkRunner(link, reader, writer, self._on_event, clock=self._clock)
                if isinstance(route, OnionAddress):
                    runner.over_tor()
                    runner.found_via = "onion"
                else:
                    runner.path = path_of(route[0], static=route in target.static)
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
                    pairing_id = target.pairing_id
                    target.pairing_id = target.pairing_psk = target.expires = None
                    await self._handler.pairing_ended(pairing_id, closed.reason)
                    return
                if link.peer is not None:
                    target.failures = 0
                    target.next_attempt = self._clock() + BACKOFF_FIRST
                    if runner.path == "tor":
                        self._backoff_direct(target)  # the direct addresses just failed
                    else:
                        target.direct_failures = 0
                    return
            self._failed_dials += 1
            if direct_only:
                self._backoff_direct(target)
            else:
                self._backoff(target)
        finally:
            self._dialling.discard(target.verify_key)
            self._wake.set()

    def _backoff(self, target: _Target) -> None:
        """After a failed dial: 1, 2, 4 ... 60 s, however long the friend stays away (an
        exponent left unbounded overflowed after 1,025 failures, about 17 hours)."""
        target.failures += 1
        jitter = random.random()  # noqa: S311 - not crypto
        target.next_attempt = self._clock() + backoff_delay(target.failures - 1, jitter)

    def _backoff_direct(self, target: _Target) -> None:
        target.direct_failures += 1
        jitter = random.random()  # noqa: S311 - not crypto
        target.next_direct = self._clock() + backoff_delay(
            target.direct_failures - 1, jitter, UPGRADE_BACKOFF_MAX
        )
