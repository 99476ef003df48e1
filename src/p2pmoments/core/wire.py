"""Deterministic CBOR: the only importer of cbor2 (spec/encoding.md).

Signed and stored structures are CBOR maps with small unsigned integer keys
only, because cbor2's canonical mode orders mixed key types differently from
RFC 8949 section 4.2.1 (research/transport.md); `encode` enforces it.
"""

from __future__ import annotations

from typing import Any

import cbor2

from p2pmoments.core.errors import DecodeError

__all__ = ["MAX_DEPTH", "decode_map", "encode_map"]

MAX_DEPTH = 8


def _check_value(value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise DecodeError("structure nested too deeply")
    if isinstance(value, dict):
        for key, item in value.items():
            if type(key) is not int or not 0 <= key < 2**16:
                raise DecodeError("map keys must be small unsigned integers")
            _check_value(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_value(item, depth + 1)
    elif value is None or type(value) in (bool, int, bytes, str):
        return
    else:
        raise DecodeError(f"unsupported CBOR value of type {type(value).__name__}")


def encode_map(value: dict[int, Any]) -> bytes:
    """Encode a map with integer keys in RFC 8949 deterministic form."""
    _check_value(value, 0)
    return bytes(cbor2.dumps(value, canonical=True))


def decode_map(data: bytes, *, max_size: int) -> dict[int, Any]:
    """Decode bytes that must be exactly one deterministic map within `max_size`."""
    if len(data) > max_size:
        raise DecodeError(f"{len(data)} bytes is over the limit of {max_size}")
    try:
        value = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises many types on hostile input
        raise DecodeError(f"not valid CBOR: {exc}") from None
    if not isinstance(value, dict):
        raise DecodeError("expected a CBOR map")
    _check_value(value, 0)
    if encode_map(value) != data:
        raise DecodeError("CBOR is not in deterministic form")
    return value
