"""Moments opened from the store, remembered so that reading the feed does not check
their signatures and decrypt them again at each read (spec/store.md section 3.1).

A moment's id is the hash of its envelope, and what opening it yields (its header, its
content under its epoch's key) depends on that envelope and that key alone: an entry
never goes stale. What can change, who counts as a member's device and which epochs
are held, is checked again at every read (core.moment.still_admitted). Entries are
dropped when their moment is retracted, expires or is deleted with its circle, so the
memory goes back as the moments go; the whole is bounded by count and by bytes, the
least recently read out first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from p2pmoments.core.moment import Moment

__all__ = ["MAX_BYTES", "MAX_OPENED", "OpenedCache"]

MAX_OPENED = 4096  # moments remembered (a feed page is 50 posts, their replies and edits)
MAX_BYTES = 16 << 20  # of their envelopes (each decoded about as big again)


class OpenedCache:
    """Opened moments by id, least recently read first out; `hits` and `misses` count
    reads (statistics)."""

    def __init__(self, max_count: int = MAX_OPENED, max_bytes: int = MAX_BYTES) -> None:
        self._moments: OrderedDict[bytes, Moment] = OrderedDict()
        self._bytes = 0
        self._max_count = max_count
        self._max_bytes = max_bytes
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._moments)

    def __contains__(self, moment_id: object) -> bool:
        return moment_id in self._moments

    def get(self, moment_id: bytes) -> Moment | None:
        """The opened moment, if remembered."""
        moment = self._moments.get(moment_id)
        if moment is None:
            self.misses += 1
            return None
        self._moments.move_to_end(moment_id)
        self.hits += 1
        return moment

    def put(self, moment: Moment) -> None:
        """Remember an opened moment (the least recently read go past the bounds)."""
        if moment.id in self._moments:
            self._moments.move_to_end(moment.id)
            return
        self._moments[moment.id] = moment
        self._bytes += len(moment.envelope)
        while self._moments and (
            len(self._moments) > self._max_count or self._bytes > self._max_bytes
        ):
            _, out = self._moments.popitem(last=False)
            self._bytes -= len(out.envelope)

    def forget(self, moment_ids: Iterable[bytes]) -> None:
        """Drop these (retracted, expired, deleted)."""
        for moment_id in moment_ids:
            out = self._moments.pop(moment_id, None)
            if out is not None:
                self._bytes -= len(out.envelope)

    def clear(self) -> None:
        """Drop every entry."""
        self._moments.clear()
        self._bytes = 0
