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
friends, pairing codes, circles). These modules run the connections:

- net/linkinfo.py: what the links tell and ask the daemon, and what they keep of a peer;
- net/linkset.py: `LinkSet`, the listener and the links. It holds the one registry of
  who is linked, who is arriving and whom we dial, which must change in one place for
  the bounds and the one-link-per-peer rule to hold;
- here: `Links`, a `LinkSet` that also dials: whom to dial, and the dialler with its
  backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time

from p2pmoments.core.beacon import WINDOW, window_of
from p2pmoments.core.crypto import VerifyKey
from p2pmoments.core.errors import P2PMomentsError
from p2pmoments.core.link import CloseCode, Link
from p2pmoments.core.onion import OnionAddress, backoff_delay
from p2pmoments.net.discovery import Sighting
from p2pmoments.net.linkinfo import (
    Hello,
    LinkHandler,
    ListenError,
    OnionDial,
    PeerInfo,
    _Target,
    describe_bind_error,
    path_of,
)
from p2pmoments.net.linkset import (
    BACKOFF_FIRST,
    MAX_HANDSHAKING,
    MAX_HANDSHAKING_PER_HOST,
    MAX_LINKS,
    LinkSet,
)
from p2pmoments.net.transport import STREAM_LIMIT, LinkRunner

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

MAX_CONCURRENT_DIALS = 16
DIAL_TIMEOUT = 5.0
DIALLER_IDLE = 30.0
MAX_SIGHTINGS = 1024
# While linked through Tor, the direct addresses are tried again this often at most
# (an mDNS sighting tries at once): a LAN link should take over, a stale address cost
# little.
UPGRADE_BACKOFF_MAX = 300.0


class Links(LinkSet):
    """Every connection of one daemon: the listener and links (`LinkSet`), and whom we
    dial and the dialler (here)."""

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

    def answered_by_device(self, key: bytes) -> None:
        """A pairing dial to person `key` was answered by another device of theirs, and
        the pairing is done (spec/devices.md section 8.1): the dial is over (its link
        lives on under the device's key) and the code's target is let go, so that `key`
        itself is dialled afresh as a friend."""
        self._targets.pop(key, None)
        self._dialling.discard(key)

    def targets(self) -> set[bytes]:
        """Whom we dial."""
        return set(self._targets)

    def failures(self, key: bytes) -> int:
        """How many dials to `key` in a row have failed (0 if we do not dial it)."""
        target = self._targets.get(key)
        return 0 if target is None else target.failures

    def dialable(self, key: bytes) -> bool:
        """Whether we know a way to dial `key`: an address, or an onion with tor up."""
        target = self._targets.get(key)
        return target is not None and bool(
            target.addresses or (target.onion is not None and self._tor_ready())
        )

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
                return await asyncio.open_connection(host, port, limit=STREAM_LIMIT)
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
