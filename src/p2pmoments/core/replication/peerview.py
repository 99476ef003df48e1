"""What one daemon knows of one linked peer, per circle (spec/sync.md section 4): what it
holds as its haves said and our sends made it, what we told it, and, for ranges sent on
the way (section 4, point 11), what its haves confirmed and what is still unconfirmed.
`vectors.VectorSync` keeps one for each linked peer and makes every decision."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from p2pmoments.core.replication.messages import Slot

__all__ = ["PeerView"]


@dataclass(slots=True)
class PeerView:
    """What we know of one linked peer, per circle."""

    # What we know the peer holds, per circle and (author, epoch) (its haves, our sends).
    has: dict[bytes, dict[Slot, int]] = field(default_factory=dict)
    # The last vector and manifest epochs we told it, per circle: we do not repeat ourselves.
    told: dict[bytes, tuple[dict[Slot, int], frozenset[int]]] = field(default_factory=dict)
    # The manifest epochs it holds, per circle (its haves): it can open only those.
    epochs: dict[bytes, frozenset[int]] = field(default_factory=dict)
    # Slots of ranges it sent that we could not take (the circle or its membership not
    # known yet), per circle: asked for again in our next have to it (spec/sync.md 4.11).
    missed: dict[bytes, set[Slot]] = field(default_factory=dict)
    # (circle, slot) -> (from, when) we last asked it to send that range again, and when
    # we last asked it for any.
    wanted: dict[tuple[bytes, Slot], tuple[int, float]] = field(default_factory=dict)
    want_at: float = float("-inf")
    # (circle, slot) -> when we last sent it that range again because its have wanted it.
    honoured: dict[tuple[bytes, Slot], float] = field(default_factory=dict)
    # The highest seq its haves named, per circle and slot: what it confirmed holding.
    acked: dict[bytes, dict[Slot, int]] = field(default_factory=dict)
    # (circle, slot) -> (when we last sent it a range its haves have not confirmed, how
    # many times it was sent again for that): past ACK_WAIT, sent again (section 4, point 11).
    unacked: dict[tuple[bytes, Slot], tuple[float, int]] = field(default_factory=dict)
    # (circle, slot) sent again ACK_TRIES times unconfirmed: not again until it confirms
    # more (a daemon of version 2 confirms nothing).
    deaf: set[tuple[bytes, Slot]] = field(default_factory=set)

    def sent(self, circle: bytes, slot: Slot, seq: int, now: float) -> None:
        """We sent it a range of `slot` up to `seq`: it holds it, we believe, until its
        haves say otherwise or stay silent too long."""
        self.has.setdefault(circle, {})[slot] = seq
        if (circle, slot) not in self.deaf:
            tries = self.unacked.get((circle, slot), (now, 0))[1]
            self.unacked[(circle, slot)] = (now, tries)

    def honour(self, circle: bytes, slot: Slot, now: float, gap: float) -> bool:
        """Whether its want of `slot` may have the range sent again now: once in `gap`
        seconds (an honest peer asks no more often), so that a burst of haves cannot
        make us read and queue a range over and over (spec/sync.md section 4, point 11)."""
        if now - self.honoured.get((circle, slot), -gap) < gap:
            return False
        self.honoured[(circle, slot)] = now
        return True

    def confirmed(self, circle: bytes, vector: Mapping[Slot, int], now: float) -> None:
        """Its have named `vector`: what we sent it and it now holds is confirmed."""
        acked = self.acked.setdefault(circle, {})
        known = self.has.get(circle, {})
        for slot, seq in vector.items():
            if seq > acked.get(slot, 0):
                acked[slot] = seq
                self.deaf.discard((circle, slot))
                if (circle, slot) in self.unacked:
                    self.unacked[(circle, slot)] = (now, 0)  # on its way: wait again
        for key in [k for k in self.unacked if k[0] == circle]:
            if acked.get(key[1], 0) >= known.get(key[1], 0):
                del self.unacked[key]
