"""The ADDR field of the pairing link, able to carry an onion address (spec/tor.md section 5).

core/pairing.py encodes and decodes the field with `encode_addr` and `decode_addr`.
ADDR stays one base32 field; its length in bytes says what it holds:

| bytes | holds |
|---|---|
| 0 | nothing (discovery finds the owner on the LAN) |
| 6 | IPv4 address (4) + port (2) |
| 18 | IPv6 address (16) + port (2) |
| 32 | onion address: the service's Ed25519 key (its virtual port is ONION_PORT) |
| 38 | IPv4 + port, then onion key |
| 50 | IPv6 + port, then onion key |

Links without an onion address are byte for byte what they were.
"""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass

from p2pmoments.core.errors import DecodeError
from p2pmoments.core.onion import KEY_LEN, OnionAddress

__all__ = ["LinkAddress", "decode_addr", "encode_addr"]

_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_IP_LENGTHS = {0: 0, 6: 4, 18: 16}  # ADDR bytes without the onion key -> IP bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkAddress:
    """Where the owner of a pairing code can be reached: an IP address, an onion, or both."""

    host: str | None = None
    port: int | None = None
    onion: OnionAddress | None = None

    def __post_init__(self) -> None:
        if (self.host is None) != (self.port is None):
            raise ValueError("a host and a port go together")
        if self.port is not None and not 0 < self.port < 65536:
            raise ValueError("a port is 1 to 65535")


def encode_addr(addr: LinkAddress) -> str:
    """The ADDR field's text (uppercase base32, unpadded; empty if nothing is known)."""
    raw = b""
    if addr.host is not None and addr.port is not None:
        raw = ipaddress.ip_address(addr.host).packed + addr.port.to_bytes(2, "big")
    if addr.onion is not None:
        raw += bytes(addr.onion)
    return base64.b32encode(raw).decode("ascii").rstrip("=")


def decode_addr(text: str) -> LinkAddress:
    """A LinkAddress from the ADDR field (already uppercased); DecodeError with a reason."""
    if not text:
        return LinkAddress()
    if any(c not in _B32 for c in text):
        raise DecodeError("the address is not base32 (A-Z, 2-7)")
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
    except ValueError:
        raise DecodeError("the address is not valid base32") from None
    onion = None
    if len(raw) >= KEY_LEN and len(raw) - KEY_LEN in _IP_LENGTHS:
        try:
            onion = OnionAddress(raw[-KEY_LEN:])
        except DecodeError:
            raise DecodeError("the onion address in this pairing link is not valid") from None
        raw = raw[:-KEY_LEN]
    if len(raw) not in _IP_LENGTHS:
        raise DecodeError("the address in this pairing link has the wrong length")
    if not raw:
        return LinkAddress(onion=onion)
    port = int.from_bytes(raw[-2:], "big")
    if port == 0:
        raise DecodeError("the address in this pairing link has port 0")
    return LinkAddress(host=str(ipaddress.ip_address(raw[:-2])), port=port, onion=onion)
