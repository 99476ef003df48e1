"""A person's identity and its key file (spec/identity.md).

An identity is an Ed25519 signing key plus a separate X25519 link key for
Noise; the signing key signs the link key, so whoever trusts the identity
trusts the link key.
"""

from __future__ import annotations

from dataclasses import dataclass

from p2pmoments.core import wire
from p2pmoments.core.crypto import LinkPublicKey, LinkSecretKey, SigningKey, VerifyKey
from p2pmoments.core.errors import DecodeError
from p2pmoments.core.ids import IdKind, encode_id

__all__ = [
    "KEY_FILE_VERSION",
    "Identity",
    "PublicIdentity",
    "decode_key_file",
    "encode_key_file",
    "link_key_message",
]

KEY_FILE_VERSION = 1
KEY_FILE_MAX = 256
LINK_KEY_CONTEXT = b"p2pmoments/link-key/1\x00"


def link_key_message(verify_key: VerifyKey, link_key: LinkPublicKey) -> bytes:
    """What the identity signs to vouch for its link key (spec/identity.md section 2)."""
    return LINK_KEY_CONTEXT + bytes(verify_key) + bytes(link_key)


@dataclass(frozen=True, slots=True, kw_only=True)
class PublicIdentity:
    """What others know of a person: both public keys and the signature binding them."""

    verify_key: VerifyKey
    link_key: LinkPublicKey
    link_signature: bytes

    @property
    def text(self) -> str:
        """The identity's text form, with its check (spec/ids.md)."""
        return encode_id(bytes(self.verify_key), IdKind.IDENTITY)

    def verify(self) -> None:
        """Raise BadSignatureError unless the identity vouches for the link key."""
        self.verify_key.verify(
            link_key_message(self.verify_key, self.link_key), self.link_signature
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """Our own identity, with its secret keys; its repr shows only public keys."""

    signing_key: SigningKey
    link_secret: LinkSecretKey
    link_signature: bytes

    @classmethod
    def generate(cls) -> Identity:
        """A new identity with fresh keys."""
        signing_key = SigningKey.generate()
        link_secret = LinkSecretKey.generate()
        signature = signing_key.sign(
            link_key_message(signing_key.verify_key, link_secret.public_key)
        )
        return cls(signing_key=signing_key, link_secret=link_secret, link_signature=signature)

    @property
    def public(self) -> PublicIdentity:
        """The public half."""
        return PublicIdentity(
            verify_key=self.signing_key.verify_key,
            link_key=self.link_secret.public_key,
            link_signature=self.link_signature,
        )


def encode_key_file(identity: Identity) -> bytes:
    """The key file's bytes (spec/identity.md section 3)."""
    return wire.encode_map(
        {
            1: KEY_FILE_VERSION,
            2: identity.signing_key.seed,
            3: identity.link_secret.secret_bytes,
            4: identity.link_signature,
        }
    )


def decode_key_file(data: bytes) -> Identity:
    """An identity from key file bytes; raises DecodeError if anything is off."""
    fields = wire.decode_map(data, max_size=KEY_FILE_MAX)
    version = fields.get(1)
    if version != KEY_FILE_VERSION:
        raise DecodeError(f"unsupported key file version {version!r}")
    if set(fields) != {1, 2, 3, 4}:
        raise DecodeError("key file has missing or unknown fields")
    seed, link, signature = fields[2], fields[3], fields[4]
    if not all(isinstance(v, bytes) for v in (seed, link, signature)):
        raise DecodeError("key file fields must be byte strings")
    try:
        identity = Identity(
            signing_key=SigningKey(seed), link_secret=LinkSecretKey(link), link_signature=signature
        )
        identity.public.verify()
    except Exception as exc:
        raise DecodeError(f"key file is damaged: {exc}") from None
    return identity
