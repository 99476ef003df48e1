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

__all__ = ["BEACON_LEN", "MAX_SKEW", "WINDOW", "BeaconTable", "beacon", "window_of"]

WINDOW = 900  # seconds: 15 minutes
# Clocks this far apart still recognise each other (spec/discovery.md section 2): a
# clock on the wrong time zone anywhere (UTC-12 to UTC+14) against a right one or one
# wrong the other way.
MAX_SKEW = 26 * 3600
SPAN = -(-MAX_SKEW // WINDOW)  # windows either side of ours: 104
BEACON_LEN = 16
_PERSON = b"p2pm-beacon-v1"


def window_of(now: float) -> int:
    """The window number of Unix time `now`."""
    return int(now // WINDOW)


def _key(verify_key: bytes) -> bytes:
    return hashlib.blake2b(verify_key, digest_size=32, person=_PERSON).digest()


def _beacon(key: bytes, window: int) -> bytes:
    return hashlib.blake2b(
        window.to_bytes(8, "big"), key=key, digest_size=BEACON_LEN, person=_PERSON
    ).digest()


def beacon(verify_key: bytes, window: int) -> bytes:
    """The beacon of identity `verify_key` in `window`."""
    return _beacon(_key(verify_key), window)


class BeaconTable:
    """Recognises the beacons of a set of known identities around a window.

    The SPAN windows on either side are accepted too, so clocks up to MAX_SKEW apart
    still recognise each other. Only what changed is computed: as the window moves
    on, the window that enters (one beacon an identity each 15 minutes); an identity
    added, its 2 * SPAN + 1 beacons."""

    def __init__(self, span: int = SPAN) -> None:
        self._span = span
        self._table: dict[bytes, bytes] = {}
        self._made: dict[int, list[bytes]] = {}  # window -> the beacons made for it
        self._window: int | None = None
        self._keys: frozenset[bytes] = frozenset()
        self._derived: dict[bytes, bytes] = {}

    def update(self, known: Iterable[bytes], window: int) -> None:
        """Recompute what changed: identities added or gone, windows entering or left."""
        keys = frozenset(known)
        if keys == self._keys and window == self._window:
            return
        gone, added = self._keys - keys, keys - self._keys
        self._keys = keys
        if gone:
            for key in gone:
                del self._derived[key]
            self._table = {v: k for v, k in self._table.items() if k not in gone}
            self._made = {
                w: [v for v in made if v in self._table] for w, made in self._made.items()
            }
        fresh = {k: _key(k) for k in added}
        self._derived.update(fresh)
        self._window = window
        wanted = range(window - self._span, window + self._span + 1)
        for old in [w for w in self._made if w not in wanted]:
            for value in self._made.pop(old):
                self._table.pop(value, None)
        for w in wanted:
            made = self._made.get(w)
            todo = fresh if made is not None else self._derived
            if made is None:
                made = self._made[w] = []
            for key, derived in todo.items():
                value = _beacon(derived, w)
                self._table[value] = key
                made.append(value)

    def lookup(self, value: bytes) -> bytes | None:
        """The identity whose beacon `value` is, or None for a stranger."""
        return self._table.get(value)
