"""Identity keys, the link-key signature, the key file, and secret hygiene."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pmoments.core import wire
from p2pmoments.core.crypto import BadSignatureError, LinkSecretKey, SigningKey, VerifyKey
from p2pmoments.core.errors import DecodeError
from p2pmoments.core.identity import (
    Identity,
    PublicIdentity,
    decode_key_file,
    encode_key_file,
    link_key_message,
)

# RFC 8032 section 7.1, TEST 2: an independent known answer for our Ed25519 wrapper.
RFC8032_SEED = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
RFC8032_PUBLIC = bytes.fromhex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")
RFC8032_SIG = bytes.fromhex(
    "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
    "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
)


def test_signing_matches_rfc8032() -> None:
    key = SigningKey(RFC8032_SEED)
    assert bytes(key.verify_key) == RFC8032_PUBLIC
    assert key.sign(b"\x72") == RFC8032_SIG
    key.verify_key.verify(b"\x72", RFC8032_SIG)


def test_x25519_public_key_matches_rfc7748() -> None:
    # RFC 7748 section 6.1, Alice's key pair.
    secret = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    public = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    assert bytes(LinkSecretKey(secret).public_key) == public


def test_link_key_is_vouched_for_by_the_identity() -> None:
    identity = Identity.generate()
    identity.public.verify()
    other = Identity.generate()
    forged = PublicIdentity(
        verify_key=identity.public.verify_key,
        link_key=other.public.link_key,
        link_signature=identity.link_signature,
    )
    with pytest.raises(BadSignatureError):
        forged.verify()


@given(pos=st.integers(0, 63), bit=st.integers(0, 7))
def test_any_flipped_signature_bit_fails(pos: int, bit: int) -> None:
    key = SigningKey(RFC8032_SEED)
    message = link_key_message(key.verify_key, LinkSecretKey(bytes(32)).public_key)
    signature = bytearray(key.sign(message))
    signature[pos] ^= 1 << bit
    with pytest.raises(BadSignatureError):
        key.verify_key.verify(message, bytes(signature))


def test_key_file_round_trip() -> None:
    identity = Identity.generate()
    restored = decode_key_file(encode_key_file(identity))
    assert restored.public == identity.public
    assert restored.signing_key.sign(b"x") == identity.signing_key.sign(b"x")


def test_key_file_with_mismatched_keys_is_refused() -> None:
    a, b = Identity.generate(), Identity.generate()
    mixed = wire.encode_map(
        {1: 1, 2: a.signing_key.seed, 3: b.link_secret.secret_bytes, 4: a.link_signature}
    )
    with pytest.raises(DecodeError, match="damaged"):
        decode_key_file(mixed)


@given(data=st.binary(max_size=300))
def test_hostile_key_file_bytes_never_crash(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_key_file(data)


def test_secrets_never_appear_in_repr() -> None:
    identity = Identity.generate()
    secrets = [identity.signing_key.seed, identity.link_secret.secret_bytes]
    text = repr(identity) + str(identity) + repr(identity.signing_key) + repr(identity.link_secret)
    for secret in secrets:
        assert secret.hex() not in text
        assert secret.hex()[:16] not in text
        assert repr(secret) not in text


def test_public_keys_compare_by_value_and_check_length() -> None:
    assert VerifyKey(bytes(32)) == VerifyKey(bytes(32))
    assert VerifyKey(bytes(32)) != VerifyKey(b"\x01" * 32)
    assert len({VerifyKey(bytes(32)), VerifyKey(bytes(32))}) == 1
    with pytest.raises(ValueError, match="32 bytes"):
        VerifyKey(bytes(31))
