"""Links to peers: the listener, the dialler and its targets, who is linked, and the
bounds on what strangers can make us hold (spec/transport.md sections 1, 8, 9).

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
import logging
import random
import time
from collections.abc import Callable, Coroutine
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
BACKOFF_MAX = 60.0
BACKOFF_JITTER = 0.2
ABUSE_COOL_OFF = 60.0  # seconds a peer dropped for abuse may not link again
DIALLER_IDLE = 30.0
MAX_SIGHTINGS = 1024


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
    host: str | None
    initiator: bool
    pairing_id: int | None  # we dialled to complete this pairing
    pairing_token: bytes | None  # they used this code of ours


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
    pairing_id: int | None = None
    pairing_psk: bytes | None = field(default=None, repr=False)  # a secret
    expires: float | None = None
    failures: int = 0
    next_attempt: float = 0.0
    found_via: str = "address"


@dataclass(slots=True)
class _Linked:
    runner: LinkRunner
    name: str
    since: float
    found_via: str


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
    ) -> None:
        self._identity = identity
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
        self.listen_port: int | None = None
        self.listen_addresses: list[str] = []

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

    def close_all(self) -> None:
        """Stop dialling and say goodbye on every link (shutdown)."""
        self._closing = True
        self._wake.set()
        for runner in [p.runner for p in self._linked.values()] + list(self._handshaking):
            runner.close(CloseCode.SHUTDOWN, "shutting down")

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer = writer.get_extra_info("peername")
        host = peer[0] if peer else "?"
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
        )
        runner = LinkRunner(link, reader, writer, self._on_event, clock=self._clock)
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
        )
        # While the daemon looks at who this is (it may await the store), nobody dials the
        # peer: a second link would only be dropped again by the tie-break.
        self._arriving.add(key)
        try:
            refusal = await self._handler.established(hello)
        finally:
            self._arriving.discard(key)
        if refusal is not None:
            runner.close(*refusal)
            return
        if runner.link.initiator:
            self._dialling.discard(key)  # the dial is over; the link lives on
        existing = self._linked.get(key)
        if existing is not None and existing.runner is not runner:
            # One link per pair (spec/transport.md section 8).
            if admission.keep_new_link(
                self._me,
                key,
                old_dialled_by_us=existing.runner.link.initiator,
                new_dialled_by_us=runner.link.initiator,
            ):
                existing.runner.close(CloseCode.REPLACED, "duplicate link")
            else:
                runner.close(CloseCode.REPLACED, "duplicate link")
                return
        self._linked[key] = _Linked(
            runner=runner, name=event.name, since=time.time(), found_via=runner.found_via
        )
        # A link, no longer a handshake: it stops counting against the handshake bounds
        # (before, a host could hold at most 16 links to us, of any kind).
        self._handshaking.pop(runner, None)
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

    def statistics(self) -> dict[str, int]:
        """A snapshot of the link counters."""
        return {
            "links": len(self._linked),
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
    ) -> None:
        """Dial `key` (a friend or co-member), at `address` too if given (first in line
        with `first`, as a configured static address is)."""
        target = self._targets.get(key) or _Target(verify_key=key, link_key=link_key)
        target.link_key = link_key
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
    ) -> None:
        """Dial the owner of a code we scanned, with its token, until it expires."""
        target = self._targets.get(key) or _Target(verify_key=key, link_key=link_key)
        target.link_key = link_key
        target.pairing_id, target.pairing_psk, target.expires = pairing_id, psk, expires
        target.next_attempt, target.failures = 0.0, 0
        if address is not None and address not in target.addresses:
            target.addresses.insert(0, address)
        self._targets[key] = target
        self._match_sightings()
        self._wake.set()

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
        if key not in self._linked:
            target.next_attempt = 0.0
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
            # A pending pairing dials even if linked: re-pairing may bring new keys.
            due = [
                t
                for t in self._targets.values()
                if t.addresses
                and t.next_attempt <= now
                and (t.verify_key not in self._linked or t.pairing_psk is not None)
                and t.verify_key not in self._dialling
                and t.verify_key not in self._arriving
            ]
            for target in due[: max(0, MAX_CONCURRENT_DIALS - len(self._dialling))]:
                self._dialling.add(target.verify_key)
                self._spawn(self._dial(target), f"dial-{target.verify_key.hex()[:8]}")
            pending = [
                t.next_attempt
                for t in self._targets.values()
                if t.addresses and t.verify_key not in self._linked
            ]
            sleep = min([DIALLER_IDLE, *(max(0.0, n - now) for n in pending)])
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(sleep, 0.05)):
                    await self._wake.wait()

    async def _dial(self, target: _Target) -> None:
        try:
            for host, port in list(target.addresses):
                linked = target.verify_key in self._linked and target.pairing_psk is None
                if linked or self._closing:
                    return
                try:
                    async with asyncio.timeout(DIAL_TIMEOUT):
                        reader, writer = await asyncio.open_connection(host, port)
                except (OSError, TimeoutError) as exc:
                    log.debug("dial %s:%s failed: %s", host, port, exc)
                    continue
                link = Link(
                    identity=self._identity,
                    name=self._name(),
                    initiator=True,
                    now=self._clock(),
                    remote_link_key=target.link_key,
                    expected_peer=VerifyKey(target.verify_key),
                    pairing_token=target.pairing_psk,
                    listen_port=self.listen_port,
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
                    pairing_id = target.pairing_id
                    target.pairing_id = target.pairing_psk = target.expires = None
                    await self._handler.pairing_ended(pairing_id, closed.reason)
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

    def _backoff(self, target: _Target) -> None:
        target.failures += 1
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (target.failures - 1))
        jitter = 1 + random.uniform(-BACKOFF_JITTER, BACKOFF_JITTER)  # noqa: S311 - not crypto
        target.next_attempt = self._clock() + delay * jitter
