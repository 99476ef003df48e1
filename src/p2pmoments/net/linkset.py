"""The listener and the set of links (spec/transport.md sections 1, 8, 9): taking
connections within the bounds on what strangers can make us hold, running each link
through its handshake, keeping one link per peer, sending, and dropping.

`LinkSet` holds the one registry of who is linked, who is arriving and whom we dial;
`Links` (net/links.py) adds the dialler on top of it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any

from p2pmoments.config import Address
from p2pmoments.core import admission
from p2pmoments.core.admission import Half, Verdict
from p2pmoments.core.beacon import BeaconTable
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
from p2pmoments.net.linkinfo import (
    Hello,
    LinkHandler,
    OnionDial,
    PeerInfo,
    _Linked,
    _Target,
    describe_bind_error,
    path_of,
)
from p2pmoments.net.transport import STREAM_LIMIT, LinkRunner

__all__ = ["LinkSet"]

log = logging.getLogger(__name__)

# Bounds on what strangers can make us hold (spec/transport.md section 9).
MAX_LINKS = 256
MAX_HANDSHAKING = 64
MAX_HANDSHAKING_PER_HOST = 16
BACKOFF_FIRST = 1.0
ABUSE_COOL_OFF = 60.0  # seconds a peer dropped for abuse may not link again
TOR_HOST = "tor"  # the handshake bounds count links through our onion service as one host


class LinkSet:
    """Every connection of one daemon: the listener, the links, and the registry the
    dialler (net/links.py) shares."""

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
            server = await asyncio.start_server(
                self._on_connection, address.host, address.port, limit=STREAM_LIMIT
            )
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
            # Not a duplicate on its way out, nor a link we closed (a peer we dropped, or
            # our shutdown: whatever it still sends is not handled, so that no handler
            # waits on work that a closing daemon no longer starts).
            if info is not None and info.runner is runner and runner.closed is None:
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

    def send_if_room(self, key: bytes, body: dict[int, Any], room: int) -> bool:
        """Send bulk data that may as well be dropped (chunks sent ahead, spec/sync.md
        section 4, point 10) unless more than `room` bytes wait for the peer already:
        never waits, never fills our memory; False if not sent."""
        info = self._linked.get(key)
        if info is None or info.runner.queued() > room:
            return False
        return self.send(key, body)

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

    def let_go(self, key: bytes, reason: str) -> None:
        """End a link we dialled and no longer need (the peer may dial us back)."""
        info = self._linked.get(key)
        if info is not None and info.runner.link.initiator:
            info.runner.close(CloseCode.NORMAL, reason)

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
