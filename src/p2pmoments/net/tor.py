"""The daemon's Tor: its own tor process or a system tor, an onion service for the
peer port, and streams to friends' onion services (spec/tor.md).

    tor = await Tor.launch(paths.tor_dir, extra_lines=...)   # or Tor.attach("127.0.0.1:9051")
    await tor.wait_bootstrapped(timeout=120)
    address = await tor.publish(keys.onion, peer_port, authorized=...)   # the same every start
    reader, writer = await tor.dial(friend_onion)                        # retries 0xF0 etc.
    await tor.close()

Decisions (addresses, SOCKS replies, backoff) live in core/onion.py. Our Tor is in three
modules:

- net/torprocess.py: our own tor process (its torrc, its control port, stopping it),
  the home's onion keys, and the errors;
- net/torcontrol.py: `TorControl`, the one control connection (stem, in a thread) that
  every part shares: start or attach, bootstrap and publication events, commands, close;
- here: `Tor`, a `TorControl` that publishes our onion service with client
  authorisation and opens SOCKS streams to others'.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

from p2pmoments.core.onion import (
    ONION_PORT,
    ClientAuthKey,
    ClientAuthPublicKey,
    OnionAddress,
    OnionKey,
    SocksError,
    SocksReply,
    backoff_delay,
    socks_check_method,
    socks_check_reply,
    socks_connect_request,
    socks_greeting,
    socks_reply_length,
    stalled_rend_circuits,
)
from p2pmoments.net.torcontrol import BOOTSTRAP_TIMEOUT, TorControl, TorStatus, _Service
from p2pmoments.net.torprocess import (
    START_TIMEOUT,
    TorError,
    TorNotFoundError,
    find_tor,
    load_or_create_tor_keys,
)

__all__ = [
    "BOOTSTRAP_TIMEOUT",
    "CONNECT_TIMEOUT",
    "START_TIMEOUT",
    "Tor",
    "TorError",
    "TorNotFoundError",
    "TorStatus",
    "find_tor",
    "load_or_create_tor_keys",
]

log = logging.getLogger(__name__)

# One SOCKS connect. Tor itself waits up to 120 s (SocksTimeout), but an
# introduction that reached a service instance as it stopped waits all of it;
# onion connects take seconds, so stop earlier and try again.
CONNECT_TIMEOUT = 40.0
DIAL_TIMEOUT = 300.0  # dial(): all attempts together
REFETCH_TIMEOUT = 15.0
AUTH_REFETCHES = 3


class Tor(TorControl):
    """One tor we control: our own child process or a system tor (`TorControl`), with
    our onion service and streams to others' (here)."""

    # -- our onion service --------------------------------------------------

    async def publish(
        self,
        key: OnionKey,
        target_port: int,
        *,
        virtual_port: int = ONION_PORT,
        authorized: Iterable[ClientAuthPublicKey] | None = None,
    ) -> OnionAddress:
        """Offer 127.0.0.1:`target_port` as `key`'s onion service on `virtual_port`.
        With `authorized` (possibly empty), only those clients can even find it
        (Tor v3 client authorisation). The service goes when tor or our control
        connection does (never Detach), and its key stays ours (DiscardPK)."""
        clients = None if authorized is None else frozenset(authorized)
        if self._service is not None:
            raise TorError("this tor already publishes our onion service")
        service = _Service(key=key, target=target_port, virtual=virtual_port, clients=clients)
        await self._add_onion(service)
        self._service = service
        self._onion = key.address
        log.info(
            "published onion service %r for port %d%s",
            key.address,
            target_port,
            f" for {len(clients)} authorised clients" if clients is not None else "",
        )
        return key.address

    async def set_authorized_clients(self, authorized: Iterable[ClientAuthPublicKey]) -> None:
        """Change who may reach our service: tor learns a new list only with the service
        re-added, which drops its open onion streams (their links redial)."""
        if self._service is None:
            raise TorError("no onion service is published")
        clients = frozenset(authorized)
        if clients == self._service.clients:
            return
        service = dataclasses.replace(self._service, clients=clients)
        await self._msg(f"DEL_ONION {service.key.address.service_id}")
        self._published.clear()
        self._uploads.clear()
        self._service = None
        await self._add_onion(service)
        self._service = service
        log.info("onion service now admits %d authorised clients", len(clients))

    async def _add_onion(self, service: _Service) -> None:
        from stem.response import convert

        key, clients = service.key, service.clients
        flags = "DiscardPK"
        auth = ""
        if clients is not None:
            flags += ",V3Auth"
            # Tor wants at least one client; a key nobody holds admits nobody (tor pads
            # the list to 16 with fake entries anyway, so it is not visible).
            listed = clients or {ClientAuthKey.generate().public_key}
            auth = "".join(f" ClientAuthV3={c.tor_text()}" for c in sorted(listed, key=bytes))
        response = await self._msg(
            f"ADD_ONION {key.tor_blob()} Flags={flags} "
            f"Port={service.virtual},127.0.0.1:{service.target}{auth}"
        )
        convert("ADD_ONION", response)
        if response.service_id != key.address.service_id:
            raise TorError("tor published our onion key under another address")

    # -- reaching others ----------------------------------------------------

    async def add_client_auth(self, onion: OnionAddress, key: ClientAuthKey) -> None:
        """Let our tor use `key` to reach `onion`'s authorised-only service. Kept in
        tor's memory only (no Flags=Permanent): the daemon adds them again at start."""
        await self._msg(f"ONION_CLIENT_AUTH_ADD {onion.service_id} {key.tor_blob()}")

    async def remove_client_auth(self, onion: OnionAddress) -> None:
        """Forget the client-auth key for `onion`."""
        await self._msg(f"ONION_CLIENT_AUTH_REMOVE {onion.service_id}", ok=("250", "251"))

    async def open_connection(
        self, onion: OnionAddress, port: int = ONION_PORT, *, timeout: float = CONNECT_TIMEOUT
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """One stream to `onion:port` through tor's SOCKS port; SocksError says why not
        (`.retry`: whether trying again later can help)."""
        socks = await self.socks_port()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", socks), timeout
            )
        except (OSError, TimeoutError) as exc:
            raise TorError(f"tor's SOCKS port 127.0.0.1:{socks} does not answer: {exc}") from None
        try:
            async with asyncio.timeout(timeout):
                writer.write(socks_greeting())
                socks_check_method(await reader.readexactly(2))
                writer.write(socks_connect_request(str(onion), port))
                head = await reader.readexactly(5)
                rest = await reader.readexactly(socks_reply_length(head) - 5)
                socks_check_reply(head + rest)
        except BaseException as exc:
            writer.close()
            if isinstance(exc, TimeoutError):
                raise SocksError(
                    f"no answer from the onion service in {timeout:.0f}s", retry=True
                ) from None
            if isinstance(exc, asyncio.IncompleteReadError):
                raise SocksError("tor closed the SOCKS connection", retry=True) from None
            raise
        return reader, writer

    async def dial(
        self,
        onion: OnionAddress,
        port: int = ONION_PORT,
        *,
        timeout: float = DIAL_TIMEOUT,
        jitter: Callable[[], float] = random.random,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """open_connection, tried again with backoff (core/onion.py) while tor says it may
        help (a service just published answers 0xF0 for a second or two) and `timeout`
        lasts; the last SocksError otherwise."""
        deadline = time.monotonic() + timeout
        attempt = 0
        refetches = 0
        while True:
            left = deadline - time.monotonic()
            try:
                return await self.open_connection(
                    onion, port, timeout=max(min(left, CONNECT_TIMEOUT), 0.1)
                )
            except SocksError as exc:
                if exc.reply is None and exc.retry:  # no answer in time
                    await self._close_stalled(onion)
                delay = backoff_delay(attempt, jitter())
                if time.monotonic() + delay > deadline:
                    raise
                if exc.reply in _AUTH_REPLIES and refetches < AUTH_REFETCHES:
                    # Tor answers from its cached descriptor, which may predate the
                    # service listing us (it re-publishes to change its list): wait,
                    # then fetch it anew, a few times.
                    refetches += 1
                    await asyncio.sleep(delay)
                    await self._refetch(onion, timeout=min(REFETCH_TIMEOUT, max(left, 0.1)))
                    delay = 0.0
                elif not exc.retry:
                    raise
                log.debug("onion %r: %s; again in %.1fs", onion, exc, delay)
            attempt += 1
            await asyncio.sleep(delay)

    async def _close_stalled(self, onion: OnionAddress) -> None:
        """Close our rendezvous circuits to `onion` that still wait for it: tor would
        hang the next stream on them too."""
        try:
            status = await self._get_info("circuit-status")
            for circuit in stalled_rend_circuits(status, onion.service_id):
                await self._msg(f"CLOSECIRCUIT {circuit}")
        except TorError as exc:
            log.debug("could not close stalled circuits: %s", exc)

    async def _refetch(self, onion: OnionAddress, timeout: float) -> None:
        """HSFETCH `onion`'s descriptor and wait (at most `timeout`) until one arrives."""
        done = self._fetches.setdefault(onion.service_id, asyncio.Event())
        done.clear()
        try:
            await self._msg(f"HSFETCH {onion.service_id}")
            async with asyncio.timeout(timeout):
                await done.wait()
        except (TorError, TimeoutError):
            pass  # the next attempt says what is wrong
        finally:
            self._fetches.pop(onion.service_id, None)

    async def socks_port(self) -> int:
        """Tor's SOCKS port on loopback."""
        if self._socks_port is None:
            listeners = await asyncio.to_thread(self._controller.get_listeners, _socks_type())
            tcp = [p for host, p in listeners if host in ("127.0.0.1", "::1", "localhost")]
            if not tcp:
                raise TorError("tor has no SOCKS port on loopback (set SocksPort 127.0.0.1:9050)")
            self._socks_port = int(tcp[0])
        return self._socks_port

    # -- stop ---------------------------------------------------------------


_AUTH_REPLIES = (SocksReply.ONION_MISSING_CLIENT_AUTH, SocksReply.ONION_BAD_CLIENT_AUTH)


def _socks_type() -> Any:
    from stem.control import Listener

    return Listener.SOCKS
