"""The pairing code a QR code carries, and its text, the pairing link (spec/pairing.md).

    P2PM:1/<ID>/<DH>/<TOKEN>/<EXPIRES>/<NAME>/<ADDR>/<CHECK>

Every field is RFC 4648 base32, uppercase, unpadded, so the whole link stays
in QR alphanumeric mode (A-Z, 2-7, ':' and '/'). ADDR may carry an IP address and
port, an onion address, or both (core/pairing_addr.py, spec/pairing.md section 1).
"""

from __future__ import annotations

import base64
import enum
import hashlib
from dataclasses import dataclass

from p2pmoments.core.crypto import LinkPublicKey, VerifyKey
from p2pmoments.core.errors import DecodeError, LocalProtocolError
from p2pmoments.core.onion import OnionAddress
from p2pmoments.core.pairing_addr import LinkAddress, decode_addr, encode_addr
from p2pmoments.core.profile import check_display_name

__all__ = [
    "CODE_VERSION",
    "MAX_CODE_LEN",
    "TOKEN_LEN",
    "Direction",
    "PairingCode",
    "PairingEvent",
    "PairingState",
    "check_not_self",
    "decode_code",
    "decode_device_link",
    "device_link_psk",
    "encode_code",
    "encode_device_link",
    "join_code",
    "next_state",
    "token_psk",
]

SCHEME = "P2PM:"
DEVICE_SCHEME = "P2PD:"  # a link to add a device of one's own (spec/devices.md section 10)
CODE_VERSION = 1
TOKEN_LEN = 16
CHECK_LEN = 5
MAX_CODE_LEN = 300  # longer than any valid link; checked before parsing
_FIELDS = 8  # version, id, dh, token, expires, name, addr, check


@dataclass(frozen=True, slots=True, kw_only=True)
class PairingCode:
    """What a pairing QR code says."""

    identity: VerifyKey
    link_key: LinkPublicKey
    token: bytes
    expires: int  # Unix seconds
    name: str
    host: str | None = None
    port: int | None = None
    onion: OnionAddress | None = None  # the owner's onion service (spec/tor.md)

    @property
    def psk(self) -> bytes:
        """The 32-byte Noise PSK derived from the 16-byte token (spec/pairing.md section 3)."""
        return token_psk(self.token)

    def __repr__(self) -> str:
        # The token is a secret for its lifetime: keep it out of logs.
        # The onion address's repr shows a few characters only (spec/tor.md section 6).
        return (
            f"PairingCode(name={self.name!r}, host={self.host!r}, port={self.port!r}, "
            f"onion={self.onion!r})"
        )


def token_psk(token: bytes) -> bytes:
    """The IKpsk1 PSK for a pairing token."""
    return hashlib.blake2b(token, digest_size=32, person=b"p2pm-pair-psk").digest()


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=")


def _unb32(text: str, what: str) -> bytes:
    if not text or any(c not in "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567" for c in text):
        raise DecodeError(f"the {what} is not base32 (A-Z, 2-7)")
    try:
        return base64.b32decode(text + "=" * (-len(text) % 8))
    except ValueError:
        raise DecodeError(f"the {what} is not valid base32") from None


def _check(text: str, person: bytes = b"p2pm-qr") -> str:
    return _b32(
        hashlib.blake2b(text.encode("ascii"), digest_size=CHECK_LEN, person=person).digest()
    )


def device_link_psk(token: bytes) -> bytes:
    """The IKpsk1 PSK for a device link's token (spec/devices.md section 10): a person
    string of its own, so a device link can never pair, nor a pairing code link a device."""
    return hashlib.blake2b(token, digest_size=32, person=b"p2pm-devl-psk").digest()


def join_code(psk: bytes, person: bytes, link_key: bytes, device: bytes, device_link: bytes) -> str:
    """The 6 digits both devices show when a device joins by a device link (spec/devices.md
    section 10): from the link's PSK and keys and the joining device's keys, so that a
    device that joined with a copy of the link shows other digits than the one meant."""
    digest = hashlib.blake2b(
        psk + person + link_key + device + device_link, digest_size=8, person=b"p2pm-join-code"
    ).digest()
    return f"{int.from_bytes(digest, 'big') % 1_000_000:06d}"


def encode_device_link(code: PairingCode) -> str:
    """A device link's text: a pairing code's fields under the scheme P2PD: and a check
    of its own (spec/devices.md section 10), so nobody pairs with it by mistake."""
    return encode_code(code, scheme=DEVICE_SCHEME, person=b"p2pm-devlink")


def decode_device_link(text: str) -> PairingCode:
    """A device link from its text; DecodeError with a reason a person understands."""
    return decode_code(text, scheme=DEVICE_SCHEME, person=b"p2pm-devlink", what="device link")


def encode_code(code: PairingCode, *, scheme: str = SCHEME, person: bytes = b"p2pm-qr") -> str:
    """The code's text (its pairing link): uppercase, alphanumeric-mode safe."""
    body = "/".join(
        [
            f"{scheme}{CODE_VERSION}",
            _b32(bytes(code.identity)),
            _b32(bytes(code.link_key)),
            _b32(code.token),
            _b32(code.expires.to_bytes(5, "big")),
            _b32(check_display_name(code.name).encode("utf-8")),
            encode_addr(LinkAddress(host=code.host, port=code.port, onion=code.onion)),
        ]
    )
    return f"{body}/{_check(body, person)}"


def decode_code(
    text: str, *, scheme: str = SCHEME, person: bytes = b"p2pm-qr", what: str = "pairing link"
) -> PairingCode:
    """A PairingCode from its text; DecodeError with a reason a person understands."""
    if not isinstance(text, str):
        raise DecodeError(f"a {what} is text")
    text = "".join(text.split())
    if len(text) > MAX_CODE_LEN:
        raise DecodeError(f"this is too long to be a {what} ({len(text)} characters)")
    if not text.isascii():
        # Checked before changing case: "\u017f".upper() is "S" and "\u0131".upper() is "I", so a
        # link with such look-alikes would otherwise pass as another (spec/pairing.md).
        odd = next(c for c in text if not c.isascii())
        raise DecodeError(
            f"this is not a {what}: it has the character {odd!r}, and a link has "
            "only the letters A-Z, the digits 2-7, ':' and '/'"
        )
    if not text.upper().startswith(scheme):
        other = DEVICE_SCHEME if scheme == SCHEME else SCHEME
        if text.upper().startswith(other):
            raise DecodeError(
                "this is a link to add a device of yours (p2pmoments devices join), not a "
                "friend's pairing link"
                if other == DEVICE_SCHEME
                else "this is a friend's pairing link (p2pmoments pair), not a device link"
            )
        raise DecodeError(f"this is not a p2pmoments {what} (it should start with {scheme})")
    text = text.upper()
    parts = text[len(scheme) :].split("/")
    if parts[0] != str(CODE_VERSION):
        if parts[0].isdigit():
            raise DecodeError(
                f"this {what} is version {parts[0]}; this p2pmoments "
                f"understands version {CODE_VERSION} only: update it"
            )
        raise DecodeError(f"this {what} has no version")
    if len(parts) != _FIELDS:
        raise DecodeError(f"this {what} is incomplete or has extra parts")
    body, check = text.rsplit("/", 1)
    if _check(body, person) != check:
        raise DecodeError(f"this {what} is damaged or mistyped (its check does not match)")
    _, ident, dh, token, expires, name, addr = parts[:7]
    raw_id, raw_dh = _unb32(ident, "identity"), _unb32(dh, "link key")
    raw_token, raw_expires = _unb32(token, "token"), _unb32(expires, "expiry")
    if len(raw_id) != 32 or len(raw_dh) != 32:
        raise DecodeError(f"a key in this {what} has the wrong length")
    if len(raw_token) != TOKEN_LEN or len(raw_expires) != 5:
        raise DecodeError(f"the token or expiry in this {what} has the wrong length")
    try:
        display = check_display_name(_unb32(name, "name").decode("utf-8"))
    except UnicodeDecodeError:
        raise DecodeError(f"the name in this {what} is not UTF-8") from None
    where = decode_addr(addr)
    return PairingCode(
        identity=VerifyKey(raw_id),
        link_key=LinkPublicKey(raw_dh),
        token=raw_token,
        expires=int.from_bytes(raw_expires, "big"),
        name=display,
        host=where.host,
        port=where.port,
        onion=where.onion,
    )


def check_not_self(code: PairingCode, me: VerifyKey) -> None:
    """DecodeError if the code is our own."""
    if code.identity == me:
        raise DecodeError("this is your own pairing code: show it to a friend instead")


class Direction(enum.StrEnum):
    """Whose code a pairing attempt used."""

    OUT = "out"  # we scanned theirs
    IN = "in"  # they scanned ours


class PairingState(enum.StrEnum):
    """Where a pairing attempt is (spec/pairing.md section 4)."""

    PENDING = "pending"
    CONFIRMED = "confirmed"
    EXPIRED = "expired"
    REFUSED = "refused"


class PairingEvent(enum.Enum):
    """What can happen to a pairing attempt."""

    LINKED = "linked"  # the two daemons completed the handshake and hellos
    EXPIRED = "expired"  # the code ran out first
    REFUSED = "refused"  # the owner said the code cannot be used


# Every change of a pairing's state, and nothing else (style.md, rule 2). A pair not in
# the table is a bug on our side (LocalProtocolError).
_TRANSITIONS: dict[tuple[PairingState, PairingEvent], PairingState] = {
    (PairingState.PENDING, PairingEvent.LINKED): PairingState.CONFIRMED,
    (PairingState.PENDING, PairingEvent.EXPIRED): PairingState.EXPIRED,
    (PairingState.PENDING, PairingEvent.REFUSED): PairingState.REFUSED,
    # A refused device retries until its code expires: one record, its time updated.
    (PairingState.REFUSED, PairingEvent.REFUSED): PairingState.REFUSED,
    # Re-pairing with a friend (new keys, or both scanned): still confirmed.
    (PairingState.CONFIRMED, PairingEvent.LINKED): PairingState.CONFIRMED,
}


def next_state(state: PairingState, event: PairingEvent) -> PairingState:
    """The state after `event`; LocalProtocolError if it cannot happen in `state`."""
    target = _TRANSITIONS.get((state, event))
    if target is None:
        raise LocalProtocolError(f"a pairing cannot be {event.value} when {state.value}")
    return target
