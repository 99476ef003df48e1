"""Rotating discovery beacons (spec/discovery.md).

A daemon never announces its identity. Its mDNS record carries a beacon: a
keyed hash of its identity key over the current time window. Whoever knows the
identity key (friends, circle co-members, someone holding its pairing code)
can compute the beacon and recognise it; to anyone else it is 16 random-looking
bytes that change every window, unlinkable from one window to the next.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

__all__ = ["BEACON_LEN", "WINDOW", "BeaconTable", "beacon", "window_of"]

WINDOW = 900  # seconds: 15 minutes
BEACON_LEN = 16
_PERSON = b"p2pm-beacon-v1"


def window_of(now: float) -> int:
    """The window number of Unix time `now`."""
    return int(now // WINDOW)


def _key(verify_key: bytes) -> bytes:
    return hashlib.blake2b(verify_key, digest_size=32, person=_PERSON).digest()


def beacon(verify_key: bytes, window: int) -> bytes:
    """The beacon of identity `verify_key` in `window`."""
    return hashlib.blake2b(
        window.to_bytes(8, "big"), key=_key(verify_key), digest_size=BEACON_LEN, person=_PERSON
    ).digest()


class BeaconTable:
    """Recognises the beacons of a set of known identities around a window.

    Windows on either side are accepted too, so clocks a window apart still
    recognise each other.
    """

    def __init__(self) -> None:
        self._table: dict[bytes, bytes] = {}
        self._window: int | None = None
        self._keys: frozenset[bytes] = frozenset()

    def update(self, known: Iterable[bytes], window: int) -> None:
        """Recompute if the known identities or the window changed."""
        keys = frozenset(known)
        if keys == self._keys and window == self._window:
            return
        self._keys, self._window = keys, window
        self._table = {
            beacon(key, w): key for key in keys for w in (window - 1, window, window + 1)
        }

    def lookup(self, value: bytes) -> bytes | None:
        """The identity whose beacon `value` is, or None for a stranger."""
        return self._table.get(value)
