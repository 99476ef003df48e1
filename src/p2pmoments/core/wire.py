"""Deterministic CBOR: the only importer of cbor2 (spec/encoding.md).

Signed and stored structures are CBOR maps with small unsigned integer keys
only, because cbor2's canonical mode orders mixed key types differently from
RFC 8949 section 4.2.1 (research/transport.md); `encode` enforces it.
"""

from __future__ import annotations

from typing import Any

import cbor2

from p2pmoments.core.errors import DecodeError

__all__ = [
    "INT_MAX",
    "INT_MIN",
    "MAX_DEPTH",
    "decode_map",
    "encode_map",
    "encode_map_parts",
    "without_last_bytes_entry",
]

MAX_DEPTH = 8
# Integers are signed 64-bit (spec/encoding.md): what SQLite stores and what every other
# language reads without a big-number type. CBOR bignums (tags 2 and 3) decode to Python
# ints, so the range is checked on the value, not on the encoding.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1


_SCALARS = frozenset({bool, int, bytes, str, type(None)})


def _check_value(value: Any, depth: int, *, ordered: bool = True) -> None:
    """Every value is one we allow; with `ordered`, every map's keys are in ascending
    order too (as decoded: with the shortest heads cbor2 always writes, that makes
    encoding what was decoded, in its own order, the deterministic form)."""
    kind = type(value)
    if kind is int:
        if not INT_MIN <= value <= INT_MAX:
            raise DecodeError("an integer is outside the signed 64-bit range")
        return
    if kind in _SCALARS:
        return
    if depth >= MAX_DEPTH:
        raise DecodeError("structure nested too deeply")
    if kind is dict:
        previous = -1
        for key, item in value.items():
            if type(key) is not int or not 0 <= key < 2**16:
                raise DecodeError("map keys must be small unsigned integers")
            if ordered and key <= previous:
                raise DecodeError("map keys out of order")
            previous = key
            if type(item) not in _SCALARS or type(item) is int:
                _check_value(item, depth + 1, ordered=ordered)
    elif kind is list:
        for item in value:
            if type(item) not in _SCALARS or type(item) is int:
                _check_value(item, depth + 1, ordered=ordered)
    else:
        raise DecodeError(f"unsupported CBOR value of type {kind.__name__}")


def encode_map(value: dict[int, Any]) -> bytes:
    """Encode a map with integer keys in RFC 8949 deterministic form."""
    if type(value) is not dict:
        raise DecodeError("expected a map")
    _check_value(value, 0, ordered=False)
    return bytes(cbor2.dumps(value, canonical=True))


LONG_BYTES = 4096  # a last entry this long is handled apart (a chunk: 512 KiB), not copied


def _head(major: int, size: int) -> bytes:
    """A CBOR head in its shortest form (RFC 8949 section 4.2.1)."""
    if size < 24:
        return bytes([major << 5 | size])
    if size < 1 << 8:
        return bytes([major << 5 | 24, size])
    if size < 1 << 16:
        return bytes([major << 5 | 25]) + size.to_bytes(2, "big")
    if size < 1 << 32:
        return bytes([major << 5 | 26]) + size.to_bytes(4, "big")
    return bytes([major << 5 | 27]) + size.to_bytes(8, "big")


def _long_tail(value: dict[int, Any]) -> tuple[int, bytes] | None:
    """The last entry of a small map if it is a long byte string: (key, value)."""
    if not 0 < len(value) < 24:
        return None
    last = max(value)  # small unsigned keys: deterministic order is numeric order
    tail = value[last]
    return (last, tail) if type(tail) is bytes and len(tail) >= LONG_BYTES else None


def _prefix(value: dict[int, Any], last: int, size: int) -> bytes:
    """The encoding of `value` up to the bytes of its last entry (a byte string of
    `size` bytes under key `last`)."""
    rest = bytes(cbor2.dumps({k: v for k, v in value.items() if k != last}, canonical=True))
    return bytes([0xA0 + len(value)]) + rest[1:] + _head(0, last) + _head(2, size)


def encode_map_parts(value: dict[int, Any]) -> list[bytes]:
    """encode_map's bytes as parts whose concatenation is the encoding: a last entry that
    is a long byte string is a part of its own, never copied (a chunk on its way)."""
    if type(value) is not dict:
        raise DecodeError("expected a map")
    _check_value(value, 0, ordered=False)
    long = _long_tail(value)
    if long is None:
        return [bytes(cbor2.dumps(value, canonical=True))]
    return [_prefix(value, long[0], len(long[1])), long[1]]


def decode_map(data: bytes, *, max_size: int) -> dict[int, Any]:
    """Decode bytes that must be exactly one deterministic map within `max_size`."""
    if len(data) > max_size:
        raise DecodeError(f"{len(data)} bytes is over the limit of {max_size}")
    try:
        value = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises many types on hostile input
        raise DecodeError(f"not valid CBOR: {exc}") from None
    if type(value) is not dict:
        raise DecodeError("expected a CBOR map")
    # Deterministic form: every map's keys ascending, and encoding what we decoded (in
    # its own order: cbor2 always writes the shortest heads) gives back the very same
    # bytes. A long byte string at the end is not encoded again: the rest is, and the
    # lengths add up.
    _check_value(value, 0)
    long = _long_tail(value)
    if long is not None:
        prefix = _prefix(value, long[0], len(long[1]))
        if len(prefix) + len(long[1]) != len(data) or not data.startswith(prefix):
            raise DecodeError("CBOR is not in deterministic form")
    elif cbor2.dumps(value) != data:
        raise DecodeError("CBOR is not in deterministic form")
    return value


def without_last_bytes_entry(encoded: bytes, value: bytes) -> bytes:
    """The deterministic encoding of a map (as `decode_map` accepted it: fewer than 24
    entries) without its last entry, a small key whose value is the byte string
    `value`: what `encode_map` gives for the same map minus that key, without
    encoding it all again."""
    size = len(value)
    head = 1 if size < 24 else 2 if size < 1 << 8 else 3 if size < 1 << 16 else 5
    entries = encoded[0] - 0xA0
    if not 0 < entries < 24:
        raise DecodeError("expected a small deterministic map")
    return bytes([0xA0 + entries - 1]) + encoded[1 : len(encoded) - (1 + head + size)]
