"""Deterministic CBOR: one encoding per value, and hostile bytes refused."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pmoments.core import wire
from p2pmoments.core.errors import DecodeError

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.binary(max_size=40)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.integers(0, 300), inner, max_size=4)
    ),
    max_leaves=12,
)
maps = st.dictionaries(st.integers(0, 2**16 - 1), values, max_size=6)


@given(value=maps)
def test_round_trip(value: dict[int, object]) -> None:
    data = wire.encode_map(value)
    assert wire.decode_map(data, max_size=len(data)) == value


def test_keys_are_ordered_as_rfc8949_says() -> None:
    # RFC 8949 section 4.2.1: bytewise order of the encoded keys.
    assert wire.encode_map({24: 1, 1: 2}).hex() == "a20102181801"


@pytest.mark.parametrize(
    ("hexdata", "reason"),
    [
        ("a2180101 0102".replace(" ", ""), "deterministic"),  # keys out of order
        ("a1190001 01".replace(" ", ""), "deterministic"),  # key 1 not in shortest form
        ("a1616101", "small unsigned integers"),  # text key
        ("a12001", "small unsigned integers"),  # negative key
        ("80", "a CBOR map"),
        ("a1", "not valid CBOR"),  # truncated
        ("bf0101ff", "deterministic"),  # indefinite length
    ],
)
def test_non_deterministic_or_foreign_forms_are_refused(hexdata: str, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        wire.decode_map(bytes.fromhex(hexdata), max_size=100)


@pytest.mark.parametrize(
    "hexdata",
    [
        "a101c249010000000000000000",  # 2^64 as a bignum (tag 2)
        "a101c349010000000000000000",  # -(2^64) - 1 as a negative bignum (tag 3)
        "a1011bffffffffffffffff",  # 2^64 - 1: over the signed range
        "a1011b8000000000000000",  # 2^63
        "a1013b8000000000000000",  # -(2^63) - 1
        "a10181c249010000000000000000",  # a bignum inside a list
    ],
)
def test_integers_outside_signed_64_bits_are_refused(hexdata: str) -> None:
    with pytest.raises(DecodeError, match="64-bit"):
        wire.decode_map(bytes.fromhex(hexdata), max_size=100)


def test_the_signed_64_bit_bounds_themselves_are_kept() -> None:
    for value in (wire.INT_MIN, wire.INT_MAX):
        data = wire.encode_map({1: value})
        assert wire.decode_map(data, max_size=100) == {1: value}


def test_size_limit_is_checked_before_parsing() -> None:
    with pytest.raises(DecodeError, match="over the limit"):
        wire.decode_map(wire.encode_map({1: b"x" * 100}), max_size=50)


def test_deep_nesting_is_refused() -> None:
    data = bytes.fromhex("a101" + "81" * 50 + "00")
    with pytest.raises(DecodeError):
        wire.decode_map(data, max_size=1000)


@given(data=st.binary(max_size=200))
def test_hostile_bytes_never_crash(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        wire.decode_map(data, max_size=200)


@given(
    st.dictionaries(
        st.integers(0, 15),
        st.one_of(st.integers(0, 2**40), st.binary(max_size=300), st.text(max_size=30)),
        max_size=10,
    ),
    st.binary(max_size=70_000),
)
def test_a_map_without_its_last_bytes_entry_is_encoded_as_if_it_never_had_it(
    fields: dict[int, object], last: bytes
) -> None:
    encoded = wire.encode_map({**fields, 16: last})  # key 16 sorts last
    assert wire.without_last_bytes_entry(encoded, last) == wire.encode_map(fields)
