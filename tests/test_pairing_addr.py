"""The pairing link's ADDR field with an onion address (core/pairing_addr.py, spec/tor.md),
and how big the QR code gets."""

from __future__ import annotations

import base64
import contextlib
import hashlib

import pytest
import segno
from hypothesis import given
from hypothesis import strategies as st

from p2pmoments.core.errors import DecodeError
from p2pmoments.core.identity import Identity
from p2pmoments.core.onion import OnionAddress, OnionKey
from p2pmoments.core.pairing import PairingCode, decode_code, encode_code
from p2pmoments.core.pairing_addr import LinkAddress, decode_addr, encode_addr

ONION = OnionKey(bytes(range(32))).address
ME = Identity.generate().public

onions = st.one_of(
    st.none(), st.binary(min_size=32, max_size=32).map(lambda s: OnionKey(s).address)
)


@given(
    host=st.one_of(st.none(), st.ip_addresses().map(str)),
    port=st.integers(1, 65535),
    onion=onions,
)
def test_round_trip(host: str | None, port: int, onion: OnionAddress | None) -> None:
    addr = LinkAddress(host=host, port=port if host else None, onion=onion)
    text = encode_addr(addr)
    assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
    assert decode_addr(text) == addr


def test_links_without_an_onion_are_unchanged() -> None:
    # What core/pairing.py writes today for 192.168.1.20:47470.
    old = base64.b32encode(bytes([192, 168, 1, 20]) + (47470).to_bytes(2, "big")).decode()
    assert encode_addr(LinkAddress(host="192.168.1.20", port=47470)) == old.rstrip("=")
    assert encode_addr(LinkAddress()) == ""
    assert decode_addr("") == LinkAddress()


def b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b32(bytes(31)), "wrong length"),
        (b32(bytes(33)), "wrong length"),
        (b32(bytes(7) + bytes(ONION)), "wrong length"),
        (b32(b"\x01" + bytes(31)), "onion address in this pairing link is not valid"),
        (b32(bytes([10, 0, 0, 1, 0, 0]) + bytes(ONION)), "port 0"),
        ("abc", "base32"),
        ("A", "valid base32"),
    ],
)
def test_bad_addresses_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode_addr(text)


@given(st.text(max_size=100))
def test_hostile_text_only_ever_raises_decode_error(text: str) -> None:
    with contextlib.suppress(DecodeError):
        decode_addr(text)


def test_a_host_needs_its_port() -> None:
    with pytest.raises(ValueError, match="together"):
        LinkAddress(host="10.0.0.1")
    with pytest.raises(ValueError, match="port"):
        LinkAddress(host="10.0.0.1", port=70000)


def link_with(name: str, addr: LinkAddress) -> str:
    """A whole pairing link whose ADDR is `addr`, as core/pairing.py writes it."""
    return encode_code(
        PairingCode(
            identity=ME.verify_key,
            link_key=ME.link_key,
            token=bytes(16),
            expires=1_800_000_000,
            name=name,
            host=addr.host,
            port=addr.port,
            onion=addr.onion,
        )
    )


def handmade_link(name: str, addr: LinkAddress) -> str:
    """The same link put together by hand (fields, then CHECK): what spec/pairing.md says."""
    base = PairingCode(
        identity=ME.verify_key,
        link_key=ME.link_key,
        token=bytes(16),
        expires=1_800_000_000,
        name=name,
    )
    parts = encode_code(base).split("/")
    body = "/".join([*parts[:-2], encode_addr(addr)])
    check = hashlib.blake2b(body.encode(), digest_size=5, person=b"p2pm-qr").digest()
    return f"{body}/{b32(check)}"


@pytest.mark.parametrize(
    "addr", [LinkAddress(onion=ONION), LinkAddress(host="10.1.2.3", port=9, onion=ONION)]
)
def test_pairing_codes_carry_an_onion(addr: LinkAddress) -> None:
    text = link_with("Alice", addr)
    assert text == handmade_link("Alice", addr)
    code = decode_code(text)
    assert (code.host, code.port, code.onion) == (addr.host, addr.port, addr.onion)
    assert ONION.service_id not in repr(code)


def test_old_links_decode_as_before() -> None:
    text = handmade_link("Alice", LinkAddress(host="192.168.1.20", port=47470))
    code = decode_code(text)
    assert (code.host, code.port, code.onion) == ("192.168.1.20", 47470, None)
    assert decode_code(handmade_link("Alice", LinkAddress())).onion is None


# spec/tor.md section 5: (name, address, characters, QR version at level M).
QR_SIZES = [
    ("Alice", LinkAddress(onion=ONION), 219, 8),
    ("Grandma Rose", LinkAddress(onion=ONION), 231, 9),
    ("x" * 32, LinkAddress(onion=ONION), 263, 10),
    ("Alice", LinkAddress(host="192.168.1.20", port=47470, onion=ONION), 228, 9),
    ("x" * 32, LinkAddress(host="192.168.1.20", port=47470, onion=ONION), 272, 10),
    ("x" * 32, LinkAddress(host="2001:db8::1", port=47470, onion=ONION), 291, 10),
]


@pytest.mark.parametrize(("name", "addr", "chars", "version"), QR_SIZES)
def test_qr_stays_scannable_with_an_onion(
    name: str, addr: LinkAddress, chars: int, version: int
) -> None:
    text = link_with(name, addr)
    assert len(text) == chars
    assert len(text) <= 300  # core/pairing.py's MAX_CODE_LEN still holds
    qr = segno.make(text, error="m", micro=False, boost_error=False)
    assert qr.mode == "alphanumeric"
    assert qr.version == version
    assert qr.version <= 10  # spec/pairing.md: scans from a phone screen
