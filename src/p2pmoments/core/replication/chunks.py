"""Which linked peer is asked for which chunk (spec/sync.md section 4, point 6).

A chunk is asked of one linked peer at a time, at most MAX_IN_FLIGHT per peer
(in want-chunks messages of at most MAX_WANTS each), topped up as chunks
arrive; a peer that says it lacks a chunk, or whose link goes, sends the chunk
to another linked peer who may read a moment that uses it. The scheduler also
follows each moment's chunks to report progress: some are not named yet (those
a chunk index lists, until its piece is here, spec/moments.md section 4), and a
moment is done only once every one is here.
Pure: the shell writes chunks, reads indexes, and tells it what was kept and named.

While the disk is full, fetching is paused: nothing more is asked of anyone, chunks
that came but could not be written are wanted again (of the same peer first), links
stay up, and `resume` asks again once there is room (spec/sync.md section 4, point 7).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from p2pmoments.core.replication.messages import MAX_WANTS, WantChunks
from p2pmoments.core.replication.vectors import Send

__all__ = ["MAX_IN_FLIGHT", "ChunkScheduler", "Lacking", "Progress", "Refill"]

MAX_IN_FLIGHT = 4 * MAX_WANTS  # chunks asked of one peer at once (32 MiB of big chunks)
REPORT_STEPS = 100  # a transfer's progress is reported at most once a 1 %

MayRead = Callable[[bytes, bytes, int], bool]  # (peer, circle, epoch)


@dataclass(frozen=True, slots=True)
class Progress:
    """Chunks of a moment's photos or files arrived: `held` of `total` are here, `size`
    bytes since the last report."""

    moment: bytes
    held: int
    total: int
    size: int

    @property
    def done(self) -> bool:
        return self.held >= self.total


@dataclass(frozen=True, slots=True)
class Refill:
    """Every chunk named so far of `moment` is here, and its chunk index has more
    pieces: the shell reads the next (Holding.refill) and gives it to `refill`, so a
    file's chunks are followed one index piece at a time (spec/sync.md section 4)."""

    moment: bytes
    peer: bytes | None  # who sent its last chunk: asked first


@dataclass(frozen=True, slots=True)
class Lacking:
    """What a moment's photos and files lack: `total` chunks in all, `missing` named and
    not here, `unnamed` not named yet (a chunk index that is not here names them)."""

    total: int
    missing: tuple[bytes, ...]
    unnamed: int = 0


@dataclass(slots=True)
class _Asking:
    wanted: deque[bytes] = field(default_factory=deque)  # still to ask it for, in order
    queued: set[bytes] = field(default_factory=set)  # the same, to look up
    in_flight: set[bytes] = field(default_factory=set)  # asked, not yet come


class ChunkScheduler:
    """Chunks to fetch, from whom, and how far each moment has come."""

    # Whether a peer is a mesh link of a circle (spec/sync.md section 7): a chunk its
    # sender lacks is asked of those first, not of the first friend linked (in a
    # circle of 150, the owner, friends with all, was asked by everyone).
    mesh: Callable[[bytes, bytes], bool] = staticmethod(lambda peer, circle: True)

    def __init__(self, may_read: MayRead) -> None:
        self._may_read = may_read
        self._peers: dict[bytes, _Asking] = {}
        self._asked: dict[bytes, bytes] = {}  # chunk -> the peer it is asked of
        self._lacking: dict[bytes, set[bytes]] = {}  # chunk -> peers that said they lack it
        self._readers: dict[bytes, set[tuple[bytes, int]]] = {}  # chunk -> (circle, epoch)
        self._remaining: dict[bytes, set[bytes]] = {}  # moment -> chunks not here yet
        self._unnamed: dict[bytes, int] = {}  # moment -> chunks its indexes will name
        self._totals: dict[bytes, int] = {}  # moment -> chunks it uses
        self._reported: dict[bytes, tuple[int, int]] = {}  # moment -> (step, bytes since)
        self._users: dict[bytes, set[bytes]] = {}  # chunk -> moments waiting for it
        self._refilling: set[bytes] = set()  # moments told to read their next piece
        self.paused = False  # the disk is full: ask nobody for anything

    # --- links -----------------------------------------------------------------

    def link_up(self, peer: bytes) -> None:
        """A peer linked: chunks may be asked of it."""
        self._peers.setdefault(peer, _Asking())

    def link_down(self, peer: bytes) -> list[Send]:
        """A peer's link went: what was asked of it is asked of another linked reader."""
        state = self._peers.pop(peer, None)
        if state is None:
            return []
        orphans = [a for a in (*state.in_flight, *state.wanted) if self._asked.get(a) == peer]
        for address in orphans:
            del self._asked[address]
        return self._ask_elsewhere(peer, orphans, lacked=False)

    # --- what needs fetching ----------------------------------------------------

    def need(
        self,
        moment: bytes,
        circle: bytes,
        epoch: int,
        total: int,
        missing: Sequence[bytes],
        source: bytes | None,
        unnamed: int = 0,
    ) -> list[Send]:
        """A stored moment of `circle` at `epoch` uses `total` chunks, `missing` not here
        and `unnamed` not yet known (their index is missing): follow them, and ask
        `source` (the peer that sent the moment) or, without one, any linked peer who may
        read them."""
        if not missing and not unnamed:
            return []
        self._totals[moment] = total
        self._unnamed[moment] = unnamed
        self._remaining.setdefault(moment, set())
        return self._follow(moment, circle, epoch, missing, source)

    def named(
        self,
        moment: bytes,
        circle: bytes,
        epoch: int,
        count: int,
        missing: Sequence[bytes],
        source: bytes | None,
    ) -> tuple[list[Send], list[Progress | Refill]]:
        """A piece of a chunk index of `moment` arrived and named `count` of its chunks,
        `missing` of them not here: follow and ask for those (of `source` first)."""
        if moment not in self._totals:
            return [], []
        self._unnamed[moment] = max(0, self._unnamed.get(moment, 0) - count)
        asks = self._follow(moment, circle, epoch, missing, source)
        progress: list[Progress | Refill] = []
        if count > len(missing) or self._finished(moment):  # some were here already
            progress = [p for p in [self._progress(moment, 0)] if p is not None]
        return asks, progress + self._next_piece(moment, source)

    def refill(
        self, moment: bytes, circle: bytes, epoch: int, lack: Lacking, source: bytes | None
    ) -> tuple[list[Send], list[Progress | Refill]]:
        """What a moment lacks, read again after a `Refill`: follow the next piece."""
        self._refilling.discard(moment)
        if moment not in self._totals:
            return [], []
        self._unnamed[moment] = lack.unnamed
        asks = self._follow(moment, circle, epoch, lack.missing, source)
        progress: list[Progress | Refill] = []
        if self._finished(moment):
            progress = [p for p in [self._progress(moment, 0)] if p is not None]
        return asks, progress + self._next_piece(moment, source)

    def _next_piece(self, moment: bytes, source: bytes | None) -> list[Refill]:
        """A Refill if every chunk followed of `moment` is here but some are unnamed."""
        if (
            moment in self._totals
            and not self._remaining.get(moment)
            and self._unnamed.get(moment)
            and moment not in self._refilling
        ):
            self._refilling.add(moment)
            return [Refill(moment, source)]
        return []

    def _follow(
        self,
        moment: bytes,
        circle: bytes,
        epoch: int,
        missing: Sequence[bytes],
        source: bytes | None,
    ) -> list[Send]:
        self._remaining[moment].update(missing)
        for address in missing:
            self._users.setdefault(address, set()).add(moment)
            self._readers.setdefault(address, set()).add((circle, epoch))
        if not missing:
            return []
        if source is not None and source in self._peers:
            return self.want(source, missing)
        return self._ask_elsewhere(None, list(missing), lacked=False)

    def _finished(self, moment: bytes) -> bool:
        return not self._remaining.get(moment) and not self._unnamed.get(moment)

    def _progress(self, moment: bytes, size: int) -> Progress | None:
        """How far `moment` has come, once per REPORT_STEP of its chunks at most (and when
        it is done): a 4 GB file makes a hundred events, not eight thousand. `size` is
        what arrived since the last report."""
        total = self._totals[moment]
        held = total - len(self._remaining[moment]) - self._unnamed.get(moment, 0)
        step, since = self._reported.get(moment, (-1, 0))
        since += size
        if self._finished(moment):
            del self._remaining[moment], self._totals[moment]
            self._unnamed.pop(moment, None)
            self._refilling.discard(moment)
            self._reported.pop(moment, None)
            return Progress(moment, held, total, since)
        now = held * REPORT_STEPS // total
        if now <= step:
            self._reported[moment] = (step, since)
            return None
        self._reported[moment] = (now, 0)
        return Progress(moment, held, total, since)

    def want(self, peer: bytes, addresses: Iterable[bytes]) -> list[Send]:
        """Queue chunks to ask `peer` for (not those asked of another linked peer), and
        top up what is in flight with it."""
        state = self._peers.get(peer)
        if state is None:
            return []
        for address in addresses:
            holder = self._asked.get(address)
            if holder is not None and holder != peer and holder in self._peers:
                continue
            if address not in state.in_flight and address not in state.queued:
                state.wanted.append(address)
                state.queued.add(address)
                self._asked[address] = peer
        return self._top_up(peer, state)

    def asked_of(self, peer: bytes, address: bytes) -> bool:
        """True if we asked `peer` for this chunk and it has not come yet."""
        state = self._peers.get(peer)
        return state is not None and address in state.in_flight

    # --- what came -------------------------------------------------------------

    def lacked(self, peer: bytes, addresses: Sequence[bytes]) -> list[Send]:
        """`peer` says it does not hold these (which we asked of it): ask another."""
        state = self._peers.get(peer)
        if state is not None:
            state.in_flight.difference_update(addresses)
        out = self._ask_elsewhere(peer, list(addresses), lacked=True)
        if state is not None:
            out += self._top_up(peer, state)
        return out

    def arrived(self, peer: bytes, addresses: Sequence[bytes]) -> list[Send]:
        """Chunks we asked `peer` for came (not yet checked): ask for the next ones, so
        they travel while these are written."""
        state = self._peers.get(peer)
        if state is None:
            return []
        state.in_flight.difference_update(addresses)
        for address in addresses:
            if self._asked.get(address) == peer:
                del self._asked[address]
        return self._top_up(peer, state)

    def kept(
        self, sizes: Sequence[tuple[bytes, int]], peer: bytes | None = None
    ) -> list[Progress | Refill]:
        """These chunks (from `peer`) are now on disk: how far each moment using them
        has come, and which should read their next index piece."""
        out: list[Progress | Refill] = []
        for address, size in sizes:
            self._lacking.pop(address, None)
            self._readers.pop(address, None)
            for moment in sorted(self._users.pop(address, set())):
                remaining = self._remaining.get(moment)
                if remaining is None:
                    continue
                remaining.discard(address)
                progress = self._progress(moment, size)
                if progress is not None:
                    out.append(progress)
                out += self._next_piece(moment, peer)
        return out

    # --- a full disk ---------------------------------------------------------------

    def pause(self) -> None:
        """The disk is full: ask for nothing more (what is in flight still comes)."""
        self.paused = True

    def unwritten(self, peer: bytes, addresses: Sequence[bytes]) -> list[Send]:
        """Chunks that came from `peer` but could not be written (the disk is full): wanted
        again, of `peer` first, asked for once fetching resumes."""
        if peer in self._peers:
            return self.want(peer, addresses)
        return self._ask_elsewhere(None, list(addresses), lacked=False)

    def resume(self) -> list[Send]:
        """There is room again: ask every linked peer for what it was to be asked."""
        self.paused = False
        return [send for peer, state in self._peers.items() for send in self._top_up(peer, state)]

    def statistics(self) -> dict[str, int]:
        """How much is being fetched."""
        return {
            "chunks_wanted": len(self._users),
            "chunks_in_flight": sum(len(s.in_flight) for s in self._peers.values()),
            "transfers": len(self._remaining),
            "fetching_paused": int(self.paused),
        }

    # --- internals ----------------------------------------------------------------

    def _top_up(self, peer: bytes, state: _Asking) -> list[Send]:
        if self.paused:
            return []
        ask = []
        while state.wanted and len(state.in_flight) < MAX_IN_FLIGHT:
            address = state.wanted.popleft()
            state.queued.discard(address)
            state.in_flight.add(address)
            ask.append(address)
        return [
            Send(peer, WantChunks(addresses=tuple(ask[i : i + MAX_WANTS])))
            for i in range(0, len(ask), MAX_WANTS)
        ]

    def _ask_elsewhere(
        self, peer: bytes | None, addresses: list[bytes], *, lacked: bool
    ) -> list[Send]:
        """Ask another linked peer who may read each chunk (each peer at most once per
        chunk it lacked; the next link-up tries again)."""
        out: list[Send] = []
        for address in addresses:
            if peer is not None and self._asked.get(address) == peer:
                del self._asked[address]
            tried = self._lacking.setdefault(address, set())
            if lacked and peer is not None:
                tried.add(peer)
            readers = self._readers.get(address, set())
            for other in self._mesh_first(readers):
                if (
                    other != peer
                    and other not in tried
                    and any(self._may_read(other, c, e) for c, e in readers)
                ):
                    out += self.want(other, [address])
                    break
        return out

    # --- a partial mesh (spec/sync.md section 7) -------------------------------------

    def retry_lacked(self) -> list[Send]:
        """Ask again for each chunk still wanted that no linked peer is asked for now
        (every linked reader said it lacks it). In a partial mesh a moment travels ahead
        of its chunks: the neighbour that passed it on may still be fetching them, and
        says it lacks them. The shell calls this every second or so."""
        if self.paused:
            return []
        out: list[Send] = []
        for address in [a for a in self._users if self._asked.get(a) not in self._peers]:
            self._lacking.pop(address, None)
            out += self._ask_elsewhere(None, [address], lacked=False)
        return out

    def _mesh_first(self, readers: set[tuple[bytes, int]]) -> list[bytes]:
        """Linked peers, the circle's mesh links first."""
        circles = {circle for circle, _ in readers}
        return sorted(self._peers, key=lambda p: not any(self.mesh(p, c) for c in circles))
