"""Per-peer budgets, sans-I/O: how fast a peer may make us work, and how much junk
it may send before we drop it (spec/sync.md section 5). The caller passes the time."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["JunkScore", "TokenBucket"]


@dataclass(slots=True)
class TokenBucket:
    """`rate` units a second, bursts of up to `burst`.

    `take` never refuses: it says how long to wait before doing the work, so a
    busy peer is slowed down (its link is read later) and no one else is."""

    rate: float
    burst: float
    _level: float = field(init=False)
    _at: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst <= 0:
            raise ValueError("a token bucket needs a positive rate and burst")
        self._level = self.burst

    def take(self, units: float, now: float) -> float:
        """Spend `units`; returns the seconds to wait first (0 within the budget)."""
        if self._at is not None:
            self._level = min(self.burst, self._level + (now - self._at) * self.rate)
        self._at = now
        self._level -= units
        return 0.0 if self._level >= 0 else -self._level / self.rate


@dataclass(slots=True)
class JunkScore:
    """Counts what a peer sent that we could not use; forgets at `decay` units a second.

    `add` returns True once the score passes `limit`: time to drop the peer."""

    limit: float
    decay: float
    _score: float = 0.0
    _at: float | None = None

    def add(self, units: float, now: float) -> bool:
        if self._at is not None:
            self._score = max(0.0, self._score - (now - self._at) * self.decay)
        self._at = now
        self._score += units
        return self._score > self.limit
