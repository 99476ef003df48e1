"""Onion addresses, onion and client-auth keys, SOCKS5 and the dial backoff (spec/tor.md).

Pure: the shell (net/tor.py) owns tor, the sockets and the clock. A v3 onion
address is the service's Ed25519 public key; its text form is

    base32(PUBKEY | CHECKSUM | VERSION) + ".onion"
    CHECKSUM = SHA3-256(".onion checksum" | PUBKEY | VERSION)[:2], VERSION = 3

(Tor's rend-spec-v3, "Encoding onion addresses"). Text from anyone else is
hostile until parsed here.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
from dataclasses import dataclass

from p2pmoments.core import wire
from p2pmoments.core.crypto import (
    LinkSecretKey,
    SigningKey,
    is_ed25519_point,
    random_bytes,
)
from p2pmoments.core.errors import DecodeError, P2PMomentsError

__all__ = [
    "BACKOFF_MAX",
    "BACKOFF_START",
    "ONION_PORT",
    "ClientAuthKey",
    "ClientAuthPublicKey",
    "OnionAddress",
    "OnionKey",
    "SocksError",
    "SocksReply",
    "TorKeys",
    "backoff_delay",
    "decode_tor_key_file",
    "encode_tor_key_file",
    "is_onion_host",
    "pairing_client_auth",
    "parse_bootstrap_phase",
    "socks_check_method",
    "socks_check_reply",
    "socks_connect_request",
    "socks_greeting",
    "socks_reply_length",
    "stalled_rend_circuits",
]

# Every p2pmoments onion service offers the peer protocol on this virtual port,
# whatever port the daemon listens on, so an onion address needs no port.
ONION_PORT = 47470
KEY_LEN = 32
ONION_SUFFIX = ".onion"
_VERSION = b"\x03"
_SERVICE_ID_LEN = 56  # base32 of 35 bytes
_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=")


def _checksum(key: bytes) -> bytes:
    return hashlib.sha3_256(b".onion checksum" + key + _VERSION).digest()[:2]


class OnionAddress:
    """A v3 onion service address: its 32-byte Ed25519 public key."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) != KEY_LEN:
            raise DecodeError("an onion address key is 32 bytes")
        if not is_ed25519_point(bytes(key)):
            # Tor refuses these too: a key with a torsion part would give one
            # service several addresses.
            raise DecodeError("this onion address's key is not a valid Ed25519 key")
        self._key = bytes(key)

    @classmethod
    def parse(cls, text: str) -> OnionAddress:
        """From `abc…xyz.onion` (the suffix may be left off, any case); DecodeError
        with a reason a person understands."""
        if not isinstance(text, str):
            raise DecodeError("an onion address is text")
        text = text.strip()
        if len(text) > _SERVICE_ID_LEN + len(ONION_SUFFIX):
            raise DecodeError("this is too long to be an onion address")
        text = text.upper()
        if text.endswith(ONION_SUFFIX.upper()):
            text = text[: -len(ONION_SUFFIX)]
        if len(text) == 16:
            raise DecodeError("this is an old (v2) onion address; only v3 addresses work")
        if len(text) != _SERVICE_ID_LEN or any(c not in _B32 for c in text):
            raise DecodeError("an onion address is 56 letters and digits 2-7, then .onion")
        raw = base64.b32decode(text)
        key, check, version = raw[:32], raw[32:34], raw[34:]
        if version != _VERSION:
            raise DecodeError(f"this onion address is version {version[0]}; only 3 works")
        if not hmac.compare_digest(check, _checksum(key)):
            raise DecodeError("this onion address is mistyped (its checksum does not match)")
        return cls(key)

    @property
    def service_id(self) -> str:
        """The 56 lowercase characters before `.onion`, as tor's control port writes it."""
        return _b32(self._key + _checksum(self._key) + _VERSION).lower()

    def __str__(self) -> str:
        return self.service_id + ONION_SUFFIX

    def __bytes__(self) -> bytes:
        return self._key

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, OnionAddress):
            return NotImplemented
        return hmac.compare_digest(self._key, other._key)

    def __hash__(self) -> int:
        return hash(("OnionAddress", self._key))

    def __repr__(self) -> str:
        # Only friends and co-members may learn the address (spec/tor.md): a repr
        # that lands in a log shows a prefix to tell two apart, not the address.
        return f"OnionAddress({self.service_id[:6]}…)"


class OnionKey:
    """The secret key of our onion service: an Ed25519 seed, kept in the home (0600)."""

    __slots__ = ("_address", "_seed")

    def __init__(self, seed: bytes) -> None:
        if not isinstance(seed, bytes | bytearray) or len(seed) != KEY_LEN:
            raise ValueError("an onion key seed is 32 bytes")
        self._seed = bytes(seed)
        self._address = OnionAddress(bytes(SigningKey(self._seed).verify_key))

    @classmethod
    def generate(cls) -> OnionKey:
        """A new random key."""
        return cls(random_bytes(KEY_LEN))

    @property
    def seed(self) -> bytes:
        """The 32 secret bytes; for the key file only."""
        return self._seed

    @property
    def address(self) -> OnionAddress:
        """The service's address, known before tor even starts."""
        return self._address

    def tor_blob(self) -> str:
        """`ED25519-V3:<base64>` for ADD_ONION: tor takes the expanded secret key
        (SHA-512 of the seed, clamped, 64 bytes), as in its hs_ed25519_secret_key."""
        h = bytearray(hashlib.sha512(self._seed).digest())
        h[0] &= 248
        h[31] &= 127
        h[31] |= 64
        return "ED25519-V3:" + base64.b64encode(bytes(h)).decode("ascii")

    def __repr__(self) -> str:
        return f"OnionKey(address={self._address!r})"


class ClientAuthPublicKey:
    """An X25519 public key a service authorises (Tor v3 client authorisation)."""

    __slots__ = ("_raw",)

    def __init__(self, raw: bytes) -> None:
        if not isinstance(raw, bytes | bytearray) or len(raw) != KEY_LEN:
            raise DecodeError("a client authorisation key is 32 bytes")
        self._raw = bytes(raw)

    def tor_text(self) -> str:
        """Base32, unpadded: what ADD_ONION's ClientAuthV3= and authorized_clients take."""
        return _b32(self._raw)

    def __bytes__(self) -> bytes:
        return self._raw

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ClientAuthPublicKey):
            return NotImplemented
        return hmac.compare_digest(self._raw, other._raw)

    def __hash__(self) -> int:
        return hash(("ClientAuthPublicKey", self._raw))

    def __repr__(self) -> str:
        return f"ClientAuthPublicKey({self._raw.hex()[:16]}…)"


class ClientAuthKey:
    """Our X25519 secret for reaching services that require client authorisation."""

    __slots__ = ("_secret",)

    def __init__(self, raw: bytes) -> None:
        self._secret = LinkSecretKey(raw)

    @classmethod
    def generate(cls) -> ClientAuthKey:
        """A new random key."""
        return cls(random_bytes(KEY_LEN))

    @property
    def secret_bytes(self) -> bytes:
        """The 32 secret bytes; for the key file only."""
        return self._secret.secret_bytes

    @property
    def public_key(self) -> ClientAuthPublicKey:
        """What a service must list to let us in."""
        return ClientAuthPublicKey(bytes(self._secret.public_key))

    def tor_blob(self) -> str:
        """`x25519:<base64>` for ONION_CLIENT_AUTH_ADD."""
        return "x25519:" + base64.b64encode(self._secret.secret_bytes).decode("ascii")

    def __repr__(self) -> str:
        return f"ClientAuthKey(public={self.public_key!r})"


def pairing_client_auth(token: bytes) -> ClientAuthKey:
    """The client-auth key both sides derive from a pairing token (spec/tor.md section 4):
    the owner authorises its public half while the token is valid, so a scanner who
    has only the code can reach the service, and nobody without the code can."""
    if len(token) != 16:
        raise ValueError("a pairing token is 16 bytes")
    return ClientAuthKey(hashlib.blake2b(token, digest_size=32, person=b"p2pm-tor-auth").digest())


@dataclass(frozen=True, slots=True, kw_only=True)
class TorKeys:
    """The home's Tor secrets: our onion service key and our client-auth key."""

    onion: OnionKey
    client_auth: ClientAuthKey


TOR_KEY_FILE_VERSION = 1


def encode_tor_key_file(keys: TorKeys) -> bytes:
    """The tor key file's bytes (spec/tor.md section 2): a CBOR map, mode 0600."""
    return wire.encode_map(
        {1: TOR_KEY_FILE_VERSION, 2: keys.onion.seed, 3: keys.client_auth.secret_bytes}
    )


def decode_tor_key_file(data: bytes) -> TorKeys:
    """TorKeys from the key file; DecodeError if anything is off."""
    fields = wire.decode_map(data, max_size=256)
    if fields.get(1) != TOR_KEY_FILE_VERSION:
        raise DecodeError(f"unsupported tor key file version {fields.get(1)!r}")
    if set(fields) != {1, 2, 3}:
        raise DecodeError("tor key file has missing or unknown fields")
    seed, auth = fields[2], fields[3]
    if not (isinstance(seed, bytes) and isinstance(auth, bytes)):
        raise DecodeError("tor key file fields must be byte strings")
    try:
        return TorKeys(onion=OnionKey(seed), client_auth=ClientAuthKey(auth))
    except ValueError as exc:
        raise DecodeError(f"tor key file: {exc}") from None


def parse_bootstrap_phase(text: str) -> tuple[int, str]:
    """(progress 0-100, summary) from tor's `status/bootstrap-phase` or a BOOTSTRAP
    event's arguments, e.g. `NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"`."""
    progress, summary = 0, ""
    for key, _, value in (part.partition("=") for part in _split_quoted(text)):
        if key == "PROGRESS" and value.isdigit():
            progress = min(int(value), 100)
        elif key == "SUMMARY":
            summary = value[:200]
    return progress, summary


def _split_quoted(text: str) -> list[str]:
    """Split on spaces outside double quotes; quotes are dropped, backslash escapes kept."""
    parts, current, quoted, escaped = [], [], False, False
    for c in text[:2000]:
        if escaped:
            current.append(c)
            escaped = False
        elif c == "\\" and quoted:
            escaped = True
        elif c == '"':
            quoted = not quoted
        elif c == " " and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
    parts.append("".join(current))
    return [p for p in parts if p]


def stalled_rend_circuits(circuit_status: str, service_id: str) -> list[str]:
    """Ids of our rendezvous circuits for `service_id` that wait for the service and
    carry no stream (tor's `circuit-status`: PURPOSE=HS_CLIENT_REND, HS_STATE not
    HSCR_JOINED). An introduction that reached a service instance as it stopped
    leaves one waiting with no timeout, and tor attaches new streams to it."""
    stalled = []
    for line in circuit_status.splitlines()[:1000]:
        words = line.split(" ")
        fields = dict(w.partition("=")[::2] for w in words[1:] if "=" in w)
        if (
            words[0].isascii()
            and words[0].isdigit()
            and fields.get("PURPOSE") == "HS_CLIENT_REND"
            and fields.get("REND_QUERY") == service_id
            and fields.get("HS_STATE") != "HSCR_JOINED"
        ):
            stalled.append(words[0])
    return stalled


# -- SOCKS5 (RFC 1928) with Tor's extended replies ------------------------------


class SocksReply(enum.IntEnum):
    """The REP byte of a SOCKS5 reply; 0xF0-0xF7 are Tor's (torrc `ExtendedErrors`)."""

    SUCCEEDED = 0x00
    GENERAL_FAILURE = 0x01
    NOT_ALLOWED = 0x02
    NETWORK_UNREACHABLE = 0x03
    HOST_UNREACHABLE = 0x04
    CONNECTION_REFUSED = 0x05
    TTL_EXPIRED = 0x06
    COMMAND_NOT_SUPPORTED = 0x07
    ADDRESS_TYPE_NOT_SUPPORTED = 0x08
    ONION_DESCRIPTOR_NOT_FOUND = 0xF0
    ONION_DESCRIPTOR_INVALID = 0xF1
    ONION_INTRO_FAILED = 0xF2
    ONION_REND_FAILED = 0xF3
    ONION_MISSING_CLIENT_AUTH = 0xF4
    ONION_BAD_CLIENT_AUTH = 0xF5
    ONION_BAD_ADDRESS = 0xF6
    ONION_INTRO_TIMED_OUT = 0xF7


# What each reply means to a person, and whether trying again later can help.
_REPLIES: dict[SocksReply, tuple[str, bool]] = {
    SocksReply.GENERAL_FAILURE: ("tor could not open the stream", True),
    SocksReply.NOT_ALLOWED: ("tor's policy does not allow this connection", False),
    SocksReply.NETWORK_UNREACHABLE: ("tor cannot reach the network", True),
    SocksReply.HOST_UNREACHABLE: ("the onion service cannot be reached", True),
    SocksReply.CONNECTION_REFUSED: (
        "the onion service is up but nothing listens behind it",
        True,
    ),
    SocksReply.TTL_EXPIRED: ("the connection through tor timed out", True),
    SocksReply.COMMAND_NOT_SUPPORTED: ("tor does not support this request", False),
    SocksReply.ADDRESS_TYPE_NOT_SUPPORTED: ("tor does not support this address", False),
    SocksReply.ONION_DESCRIPTOR_NOT_FOUND: (
        "the onion service is not published (offline, or just started)",
        True,
    ),
    SocksReply.ONION_DESCRIPTOR_INVALID: ("the onion service's descriptor is invalid", True),
    SocksReply.ONION_INTRO_FAILED: ("introduction to the onion service failed", True),
    SocksReply.ONION_REND_FAILED: ("the rendezvous with the onion service failed", True),
    SocksReply.ONION_MISSING_CLIENT_AUTH: (
        "the onion service requires client authorisation we do not have",
        False,
    ),
    SocksReply.ONION_BAD_CLIENT_AUTH: (
        "the onion service does not accept our client authorisation",
        False,
    ),
    SocksReply.ONION_BAD_ADDRESS: ("tor says the onion address is invalid", False),
    SocksReply.ONION_INTRO_TIMED_OUT: ("introduction to the onion service timed out", True),
}


class SocksError(P2PMomentsError, ConnectionError):
    """Tor refused or failed a stream; `reply` says why, `retry` whether to try again later."""

    def __init__(self, message: str, *, reply: SocksReply | None = None, retry: bool) -> None:
        super().__init__(message)
        self.reply = reply
        self.retry = retry


def socks_greeting() -> bytes:
    """Version 5, one method: no authentication (tor's SocksPort on loopback)."""
    return b"\x05\x01\x00"


def socks_check_method(data: bytes) -> None:
    """Check the 2-byte method choice; SocksError unless it is "no authentication"."""
    if len(data) != 2 or data[0] != 5:
        raise SocksError("this port does not speak SOCKS5 (is it tor's SocksPort?)", retry=False)
    if data[1] != 0:
        raise SocksError("tor's SocksPort wants authentication we do not offer", retry=False)


def socks_connect_request(host: str, port: int) -> bytes:
    """CONNECT to `host:port` by name (tor resolves .onion itself; no DNS leaves us)."""
    name = host.encode("ascii")
    if not 0 < len(name) <= 255:
        raise ValueError("a SOCKS5 host name is 1 to 255 bytes")
    if not 0 < port < 65536:
        raise ValueError("a port is 1 to 65535")
    return b"\x05\x01\x00\x03" + bytes([len(name)]) + name + port.to_bytes(2, "big")


def socks_reply_length(head: bytes) -> int:
    """The whole reply's length from its first 5 bytes (VER REP RSV ATYP and one more)."""
    if len(head) != 5 or head[0] != 5:
        raise SocksError("tor sent a reply that is not SOCKS5", retry=False)
    atyp = head[3]
    if atyp == 1:
        return 4 + 4 + 2
    if atyp == 4:
        return 4 + 16 + 2
    if atyp == 3:
        return 4 + 1 + head[4] + 2
    raise SocksError(f"tor sent a reply with an unknown address type {atyp}", retry=False)


def socks_check_reply(reply: bytes) -> None:
    """Return if the reply says the stream is open, else SocksError with what tor said."""
    length = socks_reply_length(reply[:5])
    if len(reply) != length:
        raise SocksError("tor's SOCKS5 reply has the wrong length", retry=False)
    try:
        code = SocksReply(reply[1])
    except ValueError:
        raise SocksError(f"tor refused the stream (code {reply[1]:#04x})", retry=True) from None
    if code is SocksReply.SUCCEEDED:
        return
    message, retry = _REPLIES[code]
    raise SocksError(f"{message} (SOCKS {code.value:#04x})", reply=code, retry=retry)


# -- when to dial again ---------------------------------------------------------

# A service's descriptor reaches the directories about a second after its tor
# bootstraps, and a first connect often meets 0xF0 (spec/tor.md, figures): start
# at 1 s, double, stop doubling at a minute.
BACKOFF_START = 1.0
BACKOFF_MAX = 60.0
BACKOFF_JITTER = 0.2


def backoff_delay(attempt: int, jitter: float, cap: float = BACKOFF_MAX) -> float:
    """Seconds to wait before attempt `attempt + 1` (attempt counts from 0), given a
    uniform `jitter` in [0, 1) from the shell: 1, 2, 4 ... `cap` (60) s, each ±20 %,
    however many attempts failed before."""
    if attempt < 0 or not 0.0 <= jitter < 1.0:
        raise ValueError("attempt >= 0 and 0 <= jitter < 1")
    base = min(BACKOFF_START * 2.0 ** min(attempt, 16), cap)
    return base * (1 - BACKOFF_JITTER + 2 * BACKOFF_JITTER * jitter)


def is_onion_host(host: str) -> bool:
    """Whether `host` names an onion service (so it must be dialled through tor)."""
    return host.lower().rstrip(".").endswith(ONION_SUFFIX)
