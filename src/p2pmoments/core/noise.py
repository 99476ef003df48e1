"""The Noise Protocol Framework, revision 34, for 25519_ChaChaPoly_BLAKE2b (spec/transport.md).

Sans-I/O: `HandshakeState.write_message(payload) -> bytes` and
`read_message(bytes) -> payload`, then `split()` gives the two transport
`CipherState`s. We use IK between friends and IKpsk1 for the first contact
after a QR scan; the other patterns of tests/vectors are here so that every
published vector can check the shared machinery.

The responder of IK/IKpsk1 learns the initiator's static key from message 1
(`remote_static`) and must decide to accept it before writing message 2.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from p2pmoments.core.crypto import (
    AEAD_TAG_LEN,
    Aead,
    CryptoError,
    LinkSecretKey,
    x25519,
)
from p2pmoments.core.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "DHLEN",
    "MAX_MESSAGE",
    "CipherState",
    "HandshakeState",
    "NoiseError",
    "Pattern",
    "protocol_name",
]

DHLEN = 32
HASHLEN = 64
MAX_MESSAGE = 65535
MAX_NONCE = 2**64 - 1  # reserved by the spec: a counter never reaches it
SUITE = "25519_ChaChaPoly_BLAKE2b"


class NoiseError(RemoteProtocolError):
    """A handshake or transport message failed: the link must be closed."""


class Pattern(enum.Enum):
    """Handshake patterns: (pre-messages of initiator, of responder, messages)."""

    NN = ((), (), (("e",), ("e", "ee")))
    KK = (("s",), ("s",), (("e", "es", "ss"), ("e", "ee", "se")))
    IK = ((), ("s",), (("e", "es", "s", "ss"), ("e", "ee", "se")))
    XX = ((), (), (("e",), ("e", "ee", "s", "es"), ("s", "se")))
    IKpsk1 = ((), ("s",), (("e", "es", "s", "ss", "psk"), ("e", "ee", "se")))
    IKpsk2 = ((), ("s",), (("e", "es", "s", "ss"), ("e", "ee", "se", "psk")))
    XXpsk3 = ((), (), (("e",), ("e", "ee", "s", "es"), ("s", "se", "psk")))

    @property
    def initiator_pre(self) -> tuple[str, ...]:
        return self.value[0]  # type: ignore[no-any-return]

    @property
    def responder_pre(self) -> tuple[str, ...]:
        return self.value[1]  # type: ignore[no-any-return]

    @property
    def messages(self) -> tuple[tuple[str, ...], ...]:
        return self.value[2]  # type: ignore[no-any-return]

    @property
    def has_psk(self) -> bool:
        return "psk" in self.name


def protocol_name(pattern: Pattern) -> bytes:
    """The full protocol name, e.g. b"Noise_IK_25519_ChaChaPoly_BLAKE2b"."""
    return f"Noise_{pattern.name}_{SUITE}".encode("ascii")


def _hash(data: bytes) -> bytes:
    return hashlib.blake2b(data).digest()


def _hkdf(chaining_key: bytes, ikm: bytes, outputs: int) -> tuple[bytes, ...]:
    # Noise section 4.3: HKDF with HMAC-BLAKE2b (a real HMAC, 128-byte block).
    temp = hmac.new(chaining_key, ikm, hashlib.blake2b).digest()
    out1 = hmac.new(temp, b"\x01", hashlib.blake2b).digest()
    out2 = hmac.new(temp, out1 + b"\x02", hashlib.blake2b).digest()
    if outputs == 2:
        return out1, out2
    out3 = hmac.new(temp, out2 + b"\x03", hashlib.blake2b).digest()
    return out1, out2, out3


class CipherState:
    """A key and a nonce counter (Noise section 5.1)."""

    __slots__ = ("_aead", "_key", "_n")

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key
        self._aead = None if key is None else Aead(key)  # made once: a link sends many
        self._n = 0

    @property
    def has_key(self) -> bool:
        return self._key is not None

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes | memoryview) -> bytes:
        if self._key is None:
            return bytes(plaintext)
        if self._n >= MAX_NONCE:
            raise LocalProtocolError("nonce exhausted: the link must be re-established")
        assert self._aead is not None
        ciphertext = self._aead.encrypt_counter(self._n, ad, plaintext)
        self._n += 1
        return ciphertext

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes | memoryview) -> bytes:
        if self._key is None:
            return bytes(ciphertext)
        if self._n >= MAX_NONCE:
            raise NoiseError("nonce exhausted")
        try:
            assert self._aead is not None
            plaintext = self._aead.decrypt_counter(self._n, ad, ciphertext)
        except CryptoError as exc:
            raise NoiseError(str(exc)) from None
        self._n += 1  # only after success, as the spec says
        return plaintext

    def __repr__(self) -> str:
        return f"CipherState(has_key={self.has_key}, n={self._n})"


@dataclass(slots=True)
class _SymmetricState:
    ck: bytes
    h: bytes
    cipher: CipherState

    @classmethod
    def initialize(cls, name: bytes) -> _SymmetricState:
        h = name.ljust(HASHLEN, b"\x00") if len(name) <= HASHLEN else _hash(name)
        return cls(ck=h, h=h, cipher=CipherState())

    def copy(self) -> _SymmetricState:
        cipher = CipherState(self.cipher._key)
        cipher._n = self.cipher._n
        return _SymmetricState(ck=self.ck, h=self.h, cipher=cipher)

    def mix_key(self, ikm: bytes) -> None:
        self.ck, temp_k = _hkdf(self.ck, ikm, 2)
        self.cipher = CipherState(temp_k[:32])

    def mix_hash(self, data: bytes) -> None:
        self.h = _hash(self.h + data)

    def mix_key_and_hash(self, ikm: bytes) -> None:
        self.ck, temp_h, temp_k = _hkdf(self.ck, ikm, 3)
        self.mix_hash(temp_h)
        self.cipher = CipherState(temp_k[:32])

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cipher.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        k1, k2 = _hkdf(self.ck, b"", 2)
        return CipherState(k1[:32]), CipherState(k2[:32])


class HandshakeState:
    """One side of one Noise handshake."""

    def __init__(
        self,
        pattern: Pattern,
        *,
        initiator: bool,
        prologue: bytes,
        static: LinkSecretKey | None = None,
        remote_static: bytes | None = None,
        psks: Sequence[bytes] = (),
        ephemeral: LinkSecretKey | None = None,
    ) -> None:
        """`ephemeral` is for test vectors only; otherwise a fresh key is generated."""
        self.pattern = pattern
        self.initiator = initiator
        self._s = static
        self._e = ephemeral
        self._rs = remote_static
        self._re: bytes | None = None
        for psk in psks:
            if len(psk) != 32:
                raise LocalProtocolError("a PSK is 32 bytes")
        self._psks = list(psks)
        self._step = 0
        self._result: tuple[CipherState, CipherState] | None = None
        self._failed = False
        self.used_psk: bytes | None = None
        self._ss = _SymmetricState.initialize(protocol_name(pattern))
        self._ss.mix_hash(prologue)
        for side_is_initiator, ops in (
            (True, pattern.initiator_pre),
            (False, pattern.responder_pre),
        ):
            for op in ops:
                assert op == "s"
                if side_is_initiator == initiator:
                    if static is None:
                        raise LocalProtocolError(f"{pattern.name} needs our static key")
                    self._ss.mix_hash(bytes(static.public_key))
                else:
                    if remote_static is None or len(remote_static) != DHLEN:
                        raise LocalProtocolError(f"{pattern.name} needs the peer's static key")
                    self._ss.mix_hash(remote_static)

    # --- state ------------------------------------------------------------

    @property
    def is_complete(self) -> bool:
        return self._result is not None

    @property
    def is_our_turn(self) -> bool:
        """True if the next handshake message is ours to write."""
        return (self._step % 2 == 0) == self.initiator

    @property
    def remote_static(self) -> bytes | None:
        """The peer's static X25519 public key, once known."""
        return self._rs

    @property
    def handshake_hash(self) -> bytes:
        """The final `h`: a unique id of this session, for channel binding."""
        return self._ss.h

    def split(self) -> tuple[CipherState, CipherState]:
        """(send, receive) CipherStates once the handshake is complete."""
        if self._result is None:
            raise LocalProtocolError("the handshake is not complete")
        first, second = self._result
        return (first, second) if self.initiator else (second, first)

    # --- messages -----------------------------------------------------------

    def _check_turn(self, writing: bool) -> tuple[str, ...]:
        if self._failed:
            raise LocalProtocolError("this handshake has failed")
        if self.is_complete:
            raise LocalProtocolError("the handshake is already complete")
        if self.is_our_turn != writing:
            raise LocalProtocolError("not our turn to " + ("write" if writing else "read"))
        return self.pattern.messages[self._step]

    def _dh(self, op: str) -> bytes:
        # Token letters name (initiator key, responder key).
        ours, theirs = (op[0], op[1]) if self.initiator else (op[1], op[0])
        local = self._e if ours == "e" else self._s
        remote = self._re if theirs == "e" else self._rs
        if local is None or remote is None:
            raise LocalProtocolError(f"missing key for {op}")
        try:
            return x25519(local.secret_bytes, remote)
        except CryptoError as exc:
            raise NoiseError(str(exc)) from None

    def _next_psk(self) -> bytes:
        if not self._psks:
            raise LocalProtocolError("the pattern needs a PSK and none is left")
        return self._psks.pop(0)

    def _advance(self) -> None:
        self._step += 1
        if self._step == len(self.pattern.messages):
            self._result = self._ss.split()

    def write_message(self, payload: bytes = b"") -> bytes:
        """The next handshake message, carrying `payload`."""
        ops = self._check_turn(writing=True)
        out = bytearray()
        for op in ops:
            if op == "e":
                if self._e is None:
                    self._e = LinkSecretKey.generate()
                public = bytes(self._e.public_key)
                out += public
                self._ss.mix_hash(public)
                if self.pattern.has_psk:
                    self._ss.mix_key(public)
            elif op == "s":
                if self._s is None:
                    raise LocalProtocolError("the pattern sends our static key; we have none")
                out += self._ss.encrypt_and_hash(bytes(self._s.public_key))
            elif op == "psk":
                self._ss.mix_key_and_hash(self._next_psk())
            else:
                self._ss.mix_key(self._dh(op))
        out += self._ss.encrypt_and_hash(payload)
        if len(out) > MAX_MESSAGE:
            raise LocalProtocolError("handshake message too long")
        self._advance()
        return bytes(out)

    def read_message(self, message: bytes, *, psk_candidates: Sequence[bytes] = ()) -> bytes:
        """The payload of the peer's next handshake message; NoiseError if it is bad.

        For a message whose last token is `psk` and when we hold no PSK yet,
        each of `psk_candidates` is tried (the responder of IKpsk1 may have a few
        pairing tokens outstanding); `used_psk` tells which one worked.
        """
        ops = self._check_turn(writing=False)
        try:
            payload = self._read(ops, memoryview(message), psk_candidates)
        except NoiseError:
            self._failed = True
            raise
        self._advance()
        return payload

    def _read(self, ops: tuple[str, ...], data: memoryview, candidates: Sequence[bytes]) -> bytes:
        if len(data) > MAX_MESSAGE:
            raise NoiseError("handshake message too long")
        for i, op in enumerate(ops):
            if op == "e":
                if len(data) < DHLEN:
                    raise NoiseError("handshake message truncated")
                self._re, data = bytes(data[:DHLEN]), data[DHLEN:]
                self._ss.mix_hash(self._re)
                if self.pattern.has_psk:
                    self._ss.mix_key(self._re)
            elif op == "s":
                size = DHLEN + (AEAD_TAG_LEN if self._ss.cipher.has_key else 0)
                if len(data) < size:
                    raise NoiseError("handshake message truncated")
                self._rs = self._ss.decrypt_and_hash(bytes(data[:size]))
                data = data[size:]
            elif op == "psk":
                if not self._psks and i == len(ops) - 1 and candidates:
                    return self._read_payload_trying(bytes(data), candidates)
                self._ss.mix_key_and_hash(self._next_psk())
            else:
                self._ss.mix_key(self._dh(op))
        if self._ss.cipher.has_key and len(data) < AEAD_TAG_LEN:
            raise NoiseError("handshake message truncated")
        return self._ss.decrypt_and_hash(bytes(data))

    def _read_payload_trying(self, rest: bytes, candidates: Sequence[bytes]) -> bytes:
        for psk in candidates:
            if len(psk) != 32:
                continue
            trial = self._ss.copy()
            trial.mix_key_and_hash(psk)
            try:
                payload = trial.decrypt_and_hash(rest)
            except NoiseError:
                continue
            self._ss = trial
            self.used_psk = psk
            return payload
        raise NoiseError("no valid pairing token: the PSK does not match")

    def __repr__(self) -> str:
        role = "initiator" if self.initiator else "responder"
        return f"HandshakeState({self.pattern.name}, {role}, step={self._step})"
