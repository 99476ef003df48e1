"""What the links tell and ask the daemon (`Hello`, `PeerInfo`, `LinkHandler`), what
they keep of each peer they dial or link with (`_Target`, `_Linked`, `path_of`), and
why a socket could not be bound."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from p2pmoments.config import Address
from p2pmoments.core.admission import Admission
from p2pmoments.core.errors import P2PMomentsError
from p2pmoments.core.link import CloseCode, Closed
from p2pmoments.core.onion import OnionAddress
from p2pmoments.net.transport import LinkRunner

__all__ = [
    "Hello",
    "LinkHandler",
    "ListenError",
    "OnionDial",
    "PeerInfo",
    "describe_bind_error",
    "path_of",
]


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
