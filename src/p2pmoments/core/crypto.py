"""Keys and the operations on them: the only importer of nacl and of cryptography (style.md,
rule 9).

Keys are nouns, operations verbs; constructors check lengths; equality is
constant-time; no repr ever shows secret bytes.

ChaCha20-Poly1305 (IETF) runs through OpenSSL (the `cryptography` package): the same
cipher as libsodium's, two to four times as fast on the 64 KiB frames of a link and the
512 KiB chunks of a blob (issue 13). Everything else is libsodium's (PyNaCl).
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

import nacl.bindings
import nacl.exceptions
import nacl.signing
import nacl.utils
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from nacl._sodium import ffi as _ffi
from nacl._sodium import lib as _lib

from p2pmoments.core.errors import P2PMomentsError

__all__ = [
    "Aead",
    "BadSignatureError",
    "CryptoError",
    "LinkPublicKey",
    "LinkSecretKey",
    "SigningKey",
    "VerifyKey",
    "aead_decrypt",
    "aead_decrypt_raw",
    "aead_encrypt",
    "aead_encrypt_raw",
    "is_ed25519_point",
    "open_sealed",
    "random_bytes",
    "seal",
    "verify_many",
    "x25519",
    "xaead_decrypt",
    "xaead_encrypt",
]

KEY_LEN = 32
SIGNATURE_LEN = 64


class CryptoError(P2PMomentsError):
    """A cryptographic operation failed."""


class BadSignatureError(CryptoError):
    """A signature does not verify."""


def _check_len(name: str, raw: object, length: int) -> bytes:
    if not isinstance(raw, bytes | bytearray) or len(raw) != length:
        raise ValueError(f"{name} must be {length} bytes")
    return bytes(raw)


def random_bytes(n: int) -> bytes:
    """`n` bytes from the operating system's secure random source."""
    return bytes(nacl.utils.random(n))


class _PublicBytes:
    __slots__ = ("_raw",)
    _name = "key"

    def __init__(self, raw: bytes) -> None:
        self._raw = _check_len(self._name, raw, KEY_LEN)

    def __bytes__(self) -> bytes:
        return self._raw

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _PublicBytes)
        return hmac.compare_digest(self._raw, other._raw)

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._raw))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._raw.hex()[:16]}…)"


class VerifyKey(_PublicBytes):
    """An Ed25519 public key: the identity of a person."""

    __slots__ = ()
    _name = "an Ed25519 public key"

    def verify(self, message: bytes, signature: bytes) -> None:
        """Return if `signature` is this key's over `message`, else raise BadSignatureError."""
        if len(signature) != SIGNATURE_LEN:
            raise BadSignatureError("a signature is 64 bytes")
        try:
            # What nacl.signing.VerifyKey.verify does, without building one per call.
            nacl.bindings.crypto_sign_open(signature + message, self._raw)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
            raise BadSignatureError("signature does not verify") from None


def verify_many(checks: Sequence[tuple[bytes, bytes, bytes]]) -> bytes:
    """For each (Ed25519 key, signature, message), 1 if the signature is the key's over
    the message, else 0: one byte each (what a worker process sends back for a batch)."""
    out = bytearray(len(checks))
    opened = _ffi.new("unsigned char[]", 1 << 16)
    size = _ffi.new("unsigned long long *")
    for i, (key, signature, message) in enumerate(checks):
        if len(key) != KEY_LEN or len(signature) != SIGNATURE_LEN:
            continue
        signed = signature + message
        if len(signed) > 1 << 16:
            opened = _ffi.new("unsigned char[]", len(signed))
        out[i] = _lib.crypto_sign_open(opened, size, signed, len(signed), key) == 0
    return bytes(out)


class SigningKey:
    """An Ed25519 secret key."""

    __slots__ = ("_key",)

    def __init__(self, seed: bytes) -> None:
        self._key = nacl.signing.SigningKey(_check_len("an Ed25519 seed", seed, KEY_LEN))

    @classmethod
    def generate(cls) -> SigningKey:
        """A new random key."""
        return cls(random_bytes(KEY_LEN))

    @property
    def seed(self) -> bytes:
        """The 32-byte seed; for the key file only."""
        return bytes(self._key)

    @property
    def verify_key(self) -> VerifyKey:
        """The matching public key."""
        return VerifyKey(bytes(self._key.verify_key))

    def sign(self, message: bytes) -> bytes:
        """The 64-byte detached signature of `message`."""
        return bytes(self._key.sign(message).signature)

    def __repr__(self) -> str:
        return f"SigningKey(public={self.verify_key!r})"


def is_ed25519_point(raw: bytes) -> bool:
    """Whether `raw` encodes an Ed25519 point of the prime-order subgroup (no torsion,
    not of small order): what Tor asks of an onion address's key."""
    return len(raw) == KEY_LEN and bool(nacl.bindings.crypto_core_ed25519_is_valid_point(raw))


class LinkPublicKey(_PublicBytes):
    """An X25519 public key: the static key of a Noise link."""

    __slots__ = ()
    _name = "an X25519 public key"


class LinkSecretKey:
    """An X25519 secret key."""

    __slots__ = ("_public", "_raw")

    def __init__(self, raw: bytes) -> None:
        self._raw = _check_len("an X25519 secret key", raw, KEY_LEN)
        self._public: LinkPublicKey | None = None

    @classmethod
    def generate(cls) -> LinkSecretKey:
        """A new random key."""
        return cls(random_bytes(KEY_LEN))

    @property
    def secret_bytes(self) -> bytes:
        """The 32 secret bytes; for the key file and the Noise core only."""
        return self._raw

    @property
    def public_key(self) -> LinkPublicKey:
        """The matching public key (computed once)."""
        if self._public is None:
            self._public = LinkPublicKey(bytes(nacl.bindings.crypto_scalarmult_base(self._raw)))
        return self._public

    def __repr__(self) -> str:
        return f"LinkSecretKey(public={self.public_key!r})"


AEAD_TAG_LEN = 16


def x25519(secret: bytes, public: bytes) -> bytes:
    """The X25519 shared secret; CryptoError for a low-order public key (all-zero result)."""
    _check_len("an X25519 key", secret, KEY_LEN)
    _check_len("an X25519 key", public, KEY_LEN)
    try:
        return bytes(nacl.bindings.crypto_scalarmult(secret, public))
    except nacl.exceptions.RuntimeError:
        raise CryptoError("low-order X25519 public key") from None


def _nonce(counter: int) -> bytes:
    # Noise ChaChaPoly: 32 bits of zeros, then the counter as 64-bit little-endian.
    return b"\x00\x00\x00\x00" + counter.to_bytes(8, "little")


class Aead:
    """A ChaCha20-Poly1305 (IETF) key, ready for many messages (a link's or a blob's)."""

    __slots__ = ("_cipher",)

    def __init__(self, key: bytes) -> None:
        self._cipher = ChaCha20Poly1305(_check_len("a ChaCha20-Poly1305 key", key, KEY_LEN))

    def encrypt(self, nonce: bytes, ad: bytes, plaintext: bytes | memoryview) -> bytes:
        """The ciphertext and tag of `plaintext` under a 12-byte `nonce` (never twice)."""
        return self._cipher.encrypt(nonce, plaintext, ad)

    def decrypt(self, nonce: bytes, ad: bytes, ciphertext: bytes | memoryview) -> bytes:
        """Inverse of encrypt; CryptoError if the tag does not verify."""
        try:
            return self._cipher.decrypt(nonce, ciphertext, ad)
        except InvalidTag:
            raise CryptoError(
                "decryption failed: the message was altered or the key is wrong"
            ) from None

    def encrypt_counter(self, counter: int, ad: bytes, plaintext: bytes | memoryview) -> bytes:
        """encrypt with the Noise nonce for `counter`."""
        return self.encrypt(_nonce(counter), ad, plaintext)

    def decrypt_counter(self, counter: int, ad: bytes, ciphertext: bytes | memoryview) -> bytes:
        """decrypt with the Noise nonce for `counter`."""
        return self.decrypt(_nonce(counter), ad, ciphertext)

    def __repr__(self) -> str:
        return "Aead(…)"


def aead_encrypt(key: bytes, counter: int, ad: bytes, plaintext: bytes) -> bytes:
    """ChaCha20-Poly1305 (IETF) with the Noise nonce for `counter`."""
    return Aead(key).encrypt_counter(counter, ad, plaintext)


def aead_decrypt(key: bytes, counter: int, ad: bytes, ciphertext: bytes) -> bytes:
    """Inverse of aead_encrypt; CryptoError if the tag does not verify."""
    return Aead(key).decrypt_counter(counter, ad, ciphertext)


def aead_encrypt_raw(key: bytes, nonce: bytes, ad: bytes, plaintext: bytes) -> bytes:
    """ChaCha20-Poly1305 (IETF) with a 12-byte nonce the caller makes (never twice per key)."""
    return Aead(key).encrypt(nonce, ad, plaintext)


def aead_decrypt_raw(key: bytes, nonce: bytes, ad: bytes, ciphertext: bytes) -> bytes:
    """Inverse of aead_encrypt_raw; CryptoError if the tag does not verify."""
    return Aead(key).decrypt(nonce, ad, ciphertext)


XNONCE_LEN = 24
SEAL_OVERHEAD = 48


def xaead_encrypt(key: bytes, nonce: bytes, ad: bytes, plaintext: bytes) -> bytes:
    """XChaCha20-Poly1305 (IETF): a random 24-byte nonce is safe for any number of messages."""
    _check_len("a key", key, KEY_LEN)
    _check_len("a nonce", nonce, XNONCE_LEN)
    return bytes(
        nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad, nonce, key)
    )


def xaead_decrypt(key: bytes, nonce: bytes, ad: bytes, ciphertext: bytes) -> bytes:
    """Inverse of xaead_encrypt; CryptoError if anything was altered or the key is wrong."""
    _check_len("a key", key, KEY_LEN)
    _check_len("a nonce", nonce, XNONCE_LEN)
    if type(ciphertext) is not bytes or type(ad) is not bytes:
        raise TypeError("ciphertext and associated data are bytes")
    if len(ciphertext) < AEAD_TAG_LEN:
        raise CryptoError("decryption failed: too short")
    # libsodium itself, as PyNaCl's binding calls it but without its checks (which build
    # their error messages on every call): a catch-up opens 10,000 moments; the lengths
    # and types are checked above.
    plain = _ffi.new("unsigned char[]", max(1, len(ciphertext) - AEAD_TAG_LEN))
    size = _ffi.new("unsigned long long *")
    if _lib.crypto_aead_xchacha20poly1305_ietf_decrypt(
        plain, size, _ffi.NULL, ciphertext, len(ciphertext), ad, len(ad), nonce, key
    ):
        raise CryptoError("decryption failed: altered, or not for this key")
    return bytes(_ffi.buffer(plain, size[0]))


def seal(recipient: LinkPublicKey, plaintext: bytes) -> bytes:
    """An anonymous sealed box (libsodium crypto_box_seal) that only `recipient` opens."""
    return bytes(nacl.bindings.crypto_box_seal(plaintext, bytes(recipient)))


def open_sealed(secret: LinkSecretKey, sealed: bytes) -> bytes:
    """Open a sealed box addressed to `secret`'s public key; CryptoError otherwise."""
    if len(sealed) < SEAL_OVERHEAD:
        raise CryptoError("sealed box too short")
    try:
        return bytes(
            nacl.bindings.crypto_box_seal_open(
                sealed, bytes(secret.public_key), secret.secret_bytes
            )
        )
    except (nacl.exceptions.CryptoError, nacl.exceptions.ValueError):
        raise CryptoError("not sealed to this key, or altered") from None
