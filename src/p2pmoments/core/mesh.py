"""Which co-members to link with: a partial mesh of bounded degree (spec/sync.md section 7).

Every member of a circle places the members on RINGS rings, each in the order of a hash
of (ring, key), and links with its two neighbours on each ring: at most 2 x RINGS links
a circle, however large it is. The order depends on the keys alone, so every member
computes the same rings from the same manifest and the two ends of a link agree on it.
Members a daemon believes down (its dials failed; `down`) are left off its rings, so it
links past them to the next one up: each ring stays one cycle through the members up,
and one cycle is enough to connect them. Several random rings make an expander, so a
moment crosses 150 members in a few hops, and a member that goes cuts no one off.

Pure: keys in, keys out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable

__all__ = ["RINGS", "neighbours", "ring_order"]

RINGS = 3  # two neighbours on each: at most 6 links a circle (GossipSub's degree is 6 to 12)


def _place(ring: int, key: bytes) -> bytes:
    return hashlib.blake2b(b"p2pm-mesh-v1" + bytes([ring]) + key, digest_size=16).digest()


def ring_order(ring: int, members: Iterable[bytes]) -> list[bytes]:
    """The members in their order on `ring` (ties, which need equal hashes, by key)."""
    return sorted(set(members), key=lambda key: (_place(ring, key), key))


def neighbours(
    members: Iterable[bytes],
    me: bytes,
    down: Collection[bytes] = frozenset(),
    *,
    rings: int = RINGS,
) -> frozenset[bytes]:
    """The members `me` links with for one circle: its two neighbours on each ring among
    the members not `down` (we are never down to ourselves). Empty if `me` is not a
    member."""
    up = {key for key in members if key == me or key not in down}
    if me not in up or len(up) < 2:
        return frozenset()
    out: set[bytes] = set()
    for ring in range(rings):
        order = ring_order(ring, up)
        at = order.index(me)
        out.add(order[(at + 1) % len(order)])
        out.add(order[at - 1])
    out.discard(me)
    return frozenset(out)
