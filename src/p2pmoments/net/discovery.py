"""mDNS discovery with zeroconf: the only importer of zeroconf (spec/discovery.md).

We advertise `_p2pmoments._tcp.local.` with a rotating instance name and a
beacon in the TXT record, and browse for others. Zeroconf's callbacks only put
names on a queue (style.md rule 5); one task resolves them and tells the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from zeroconf import (
    BadTypeInNameException,
    InterfaceChoice,
    IPVersion,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from p2pmoments.core.beacon import BEACON_LEN, WINDOW, window_of
from p2pmoments.net.interfaces import lan_ipv4_addresses

__all__ = ["SERVICE_TYPE", "Discovery", "Sighting"]

log = logging.getLogger(__name__)

SERVICE_TYPE = "_p2pmoments._tcp.local."
RESOLVE_TIMEOUT_MS = 3000
MAX_QUEUE = 1024
TXT_VERSION = b"1"


@dataclass(frozen=True, slots=True, kw_only=True)
class Sighting:
    """A p2pmoments daemon seen on the LAN: its beacon and where it listens."""

    beacon: bytes
    host: str
    port: int


class Discovery:
    """Advertises our beacon and reports sightings of others."""

    def __init__(
        self,
        *,
        listen_host: str,
        port: int,
        own_beacon: Callable[[int], bytes],
        on_sighting: Callable[[Sighting], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._listen_host = listen_host
        self._port = port
        self._own_beacon = own_beacon
        self._on_sighting = on_sighting
        self._clock = clock
        self._queue: asyncio.Queue[str] = asyncio.Queue(MAX_QUEUE)
        self._info: AsyncServiceInfo | None = None

    def _interfaces(self) -> tuple[list[str] | None, list[bytes]]:
        if self._listen_host in ("0.0.0.0", "::"):  # noqa: S104 - all interfaces
            return None, [socket.inet_aton(a) for a in lan_ipv4_addresses()]
        return [self._listen_host], [socket.inet_aton(self._listen_host)]

    def _service(self, window: int) -> AsyncServiceInfo:
        value = self._own_beacon(window)
        _, addresses = self._interfaces()
        # The instance name is the beacon too: nothing stable is announced.
        return AsyncServiceInfo(
            SERVICE_TYPE,
            f"{value.hex()[:16]}.{SERVICE_TYPE}",
            addresses=addresses,
            port=self._port,
            properties={b"v": TXT_VERSION, b"b": value.hex().encode()},
        )

    def _on_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if state_change is not ServiceStateChange.Removed:
            with contextlib.suppress(asyncio.QueueFull):  # a flood only loses sightings
                self._queue.put_nowait(name)

    async def run(self) -> None:
        """Advertise and browse until cancelled."""
        interfaces, _ = self._interfaces()
        zc = AsyncZeroconf(
            interfaces=interfaces if interfaces is not None else InterfaceChoice.All,
            ip_version=IPVersion.V4Only,
        )
        browser: AsyncServiceBrowser | None = None
        try:
            window = window_of(self._clock())
            self._info = self._service(window)
            await zc.async_register_service(self._info)
            browser = AsyncServiceBrowser(zc.zeroconf, SERVICE_TYPE, handlers=[self._on_change])
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._rotate(zc, window))
                tg.create_task(self._resolve_loop(zc))
        finally:
            if browser is not None:
                await browser.async_cancel()
            with contextlib.suppress(Exception):
                await zc.async_unregister_all_services()
            await zc.async_close()

    async def _rotate(self, zc: AsyncZeroconf, window: int) -> None:
        while True:
            next_start = (window + 1) * WINDOW
            await asyncio.sleep(max(1.0, next_start - self._clock()))
            window = window_of(self._clock())
            if self._info is not None:
                await zc.async_unregister_service(self._info)
            self._info = self._service(window)
            await zc.async_register_service(self._info)

    async def _resolve_loop(self, zc: AsyncZeroconf) -> None:
        while True:
            name = await self._queue.get()
            if self._info is not None and name == self._info.name:
                continue  # ourselves
            try:
                info = AsyncServiceInfo(SERVICE_TYPE, name)
                if not await info.async_request(zc.zeroconf, RESOLVE_TIMEOUT_MS):
                    continue
            except BadTypeInNameException:
                continue
            sighting = _sighting(info)
            if sighting is not None:
                self._on_sighting(sighting)


def _sighting(info: AsyncServiceInfo) -> Sighting | None:
    """A validated sighting from a resolved record, or None if anything is off."""
    props = info.properties or {}
    raw = props.get(b"b")
    if props.get(b"v") != TXT_VERSION or not isinstance(raw, bytes):
        return None
    try:
        value = bytes.fromhex(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    addresses = info.parsed_addresses(IPVersion.V4Only)
    if len(value) != BEACON_LEN or not addresses or not info.port:
        return None
    return Sighting(beacon=value, host=addresses[0], port=info.port)
