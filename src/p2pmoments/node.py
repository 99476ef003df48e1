"""The node: owns the store, the peer listener and every background task.

Links, discovery and sync (issues 4-6) plug in here; each background task
lives in the node's TaskGroup (style.md, rule 5).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from p2pmoments import __version__
from p2pmoments.config import Address, Config
from p2pmoments.core.errors import P2PMomentsError
from p2pmoments.core.identity import Identity
from p2pmoments.core.profile import check_display_name
from p2pmoments.paths import Paths
from p2pmoments.store import AsyncStore, Store

__all__ = ["ListenError", "Node", "Profile", "describe_bind_error"]

log = logging.getLogger(__name__)


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


class Node:
    """One person's daemon, minus the HTTP front door."""

    def __init__(self, *, paths: Paths, config: Config, identity: Identity) -> None:
        self.paths = paths
        self.config = config
        self.identity = identity
        self.store = AsyncStore(paths.db_file)
        self.api_url: str | None = None
        self.started_at = time.time()
        self._listen_addresses: list[str] = []
        self._stack: AsyncExitStack | None = None

    async def __aenter__(self) -> Node:
        async with AsyncExitStack() as stack:
            await self.store.open()
            stack.push_async_callback(self.store.close)
            server = await self._start_peer_server()
            stack.push_async_callback(server.wait_closed)
            stack.callback(server.close)
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
        """Stop listening and close the store; safe to call twice."""
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    async def _start_peer_server(self) -> asyncio.Server:
        address = self.config.listen
        try:
            server = await asyncio.start_server(self._on_peer, address.host, address.port)
        except OSError as exc:
            raise describe_bind_error("for peers", address, exc) from None
        self._listen_addresses = [
            str(Address(host=sock.getsockname()[0], port=sock.getsockname()[1]))
            for sock in server.sockets
        ]
        return server

    async def _on_peer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Links (Noise, spec/transport.md) arrive with issue 4; until then the peer
        # port answers nothing and closes at once.
        log.debug(
            "closing peer connection from %s: links are not implemented yet",
            writer.get_extra_info("peername"),
        )
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    @property
    def listen_addresses(self) -> list[str]:
        """Where peers can reach us, as HOST:PORT."""
        return list(self._listen_addresses)

    async def profile(self) -> Profile:
        """Our name and identity."""
        name = await self.store.run(Store.get_name)
        return Profile(name=name, identity=self.identity.public.text)

    async def set_name(self, name: str) -> Profile:
        """Change our display name; returns once it is on disk."""
        name = check_display_name(name)
        await self.store.run(Store.set_name, name)
        log.info("display name changed")
        return Profile(name=name, identity=self.identity.public.text)

    async def status(self) -> dict[str, Any]:
        """What `p2pmoments status --json` and GET /api/v1/status show."""
        profile = await self.profile()
        counts = await self.store.run(Store.counts)
        return {
            "name": profile.name,
            "identity": profile.identity,
            "version": __version__,
            "pid": os.getpid(),
            "started_at": self.started_at,
            "listen": self.listen_addresses,
            "mdns": self.config.mdns,
            "api_url": self.api_url,
            "token_file": str(self.paths.token_file),
            "data_dir": str(self.paths.data_dir),
            "config_file": str(self.paths.config_file),
            "peers_connected": 0,
            "friends": counts.friends,
            "circles": counts.circles,
            "moments": counts.moments,
        }
