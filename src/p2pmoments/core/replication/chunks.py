"""Which linked peer is asked for which chunk (spec/sync.md section 4, point 6).

A chunk is asked of one linked peer at a time, at most MAX_IN_FLIGHT per peer
(in want-chunks messages of at most MAX_WANTS each), topped up as chunks
arrive; a peer that says it lacks a chunk, or whose link goes, sends the chunk
to another linked peer who may read a moment that uses it. The scheduler also
follows each moment's chunks to report progress: some are not named yet (those
a chunk index lists, until its piece is here, spec/moments.md section 4), and a
moment is done only once every one is here.
Pure: the shell writes chunks, reads indexes, and tells it what was kept and named.

A chunk its first peer lacked is searched for among the other linked readers; at
most SEARCHING chunks are searched for at once, the rest wait their turn, taken
from each author in turn (a member whose index names thousands of chunks that
exist nowhere delays its own chunks, not another author's). Searches are asked of
a peer after what it was asked first (its chunks of the moments it sent us). A
chunk every linked reader lacked is given up: asked again at the next ticks, then
less and less often (BACKOFF), and of each peer that links (spec/sync.md section 4,
point 6, and section 5).

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

__all__ = [
    "BACKOFF_MAX",
    "MAX_IN_FLIGHT",
    "SEARCHING",
    "ChunkScheduler",
    "Lacking",
    "Progress",
    "Refill",
]

MAX_IN_FLIGHT = 4 * MAX_WANTS  # chunks asked of one peer at once (32 MiB of big chunks)
REPORT_STEPS = 100  # a transfer's progress is reported at most once a 1 %
SEARCHING = 256  # chunks searched for among other peers at once, every author together
RETRY_AT_ONCE = 2  # rounds of 'lacked by all' after which a chunk is asked again at once
BACKOFF_MAX = 3600.0  # seconds at most between asking again for a chunk no one holds

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
    later: deque[bytes] = field(default_factory=deque)  # searches: after `wanted`
    queued: set[bytes] = field(default_factory=set)  # the same two, to look up
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
        self._authors: dict[bytes, bytes] = {}  # moment -> its author (b"": not known)
        self._searching: set[bytes] = set()  # chunks asked of a peer after another lacked
        self._waiting: dict[bytes, dict[bytes, None]] = {}  # author -> chunks to search
        self._turns: deque[bytes] = deque()  # authors with chunks waiting, in turn
        self._rounds: dict[bytes, int] = {}  # chunk -> times every linked reader lacked it
        self._given_up: dict[bytes, float | None] = {}  # chunk -> when to ask again
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
        author: bytes = b"",
    ) -> list[Send]:
        """A stored moment of `circle` at `epoch` (by `author`, if known) uses `total`
        chunks, `missing` not here and `unnamed` not yet known (their index is missing):
        follow them, and ask `source` (the peer that sent the moment) or, without one,
        any linked peer who may read them."""
        if not missing and not unnamed:
            return []
        if author or moment not in self._authors:
            self._authors[moment] = author
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
            self._authors.pop(moment, None)
            return Progress(moment, held, total, since)
        now = held * REPORT_STEPS // total
        if now <= step:
            self._reported[moment] = (step, since)
            return None
        self._reported[moment] = (now, 0)
        return Progress(moment, held, total, since)

    def want(self, peer: bytes, addresses: Iterable[bytes], *, search: bool = False) -> list[Send]:
        """Queue chunks to ask `peer` for (not those asked of another linked peer), and
        top up what is in flight with it. `search`: asked after what it was asked first."""
        state = self._peers.get(peer)
        if state is None:
            return []
        queue = state.later if search else state.wanted
        for address in addresses:
            holder = self._asked.get(address)
            if holder is not None and holder != peer and holder in self._peers:
                continue
            if address not in state.in_flight and address not in state.queued:
                queue.append(address)
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
        ended = self._searching.intersection(addresses)
        self._searching.difference_update(ended)
        return self._top_up(peer, state) + (self._next_searches() if ended else [])

    def kept(
        self, sizes: Sequence[tuple[bytes, int]], peer: bytes | None = None
    ) -> list[Progress | Refill]:
        """These chunks (from `peer`) are now on disk: how far each moment using them
        has come, and which should read their next index piece."""
        out: list[Progress | Refill] = []
        for address, size in sizes:
            self._lacking.pop(address, None)
            self._readers.pop(address, None)
            self._forget_search(address)
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
            "chunks_searching": len(self._searching),
            "chunks_waiting": sum(len(w) for w in self._waiting.values()),
            "chunks_given_up": len(self._given_up),
            "fetching_paused": int(self.paused),
        }

    # --- internals ----------------------------------------------------------------

    def _top_up(self, peer: bytes, state: _Asking) -> list[Send]:
        if self.paused:
            return []
        ask = []
        while (state.wanted or state.later) and len(state.in_flight) < MAX_IN_FLIGHT:
            address = (state.wanted or state.later).popleft()
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
        chunk it lacked; the next link-up tries again): a search, SEARCHING at once, the
        others waiting their author's turn. A chunk no one else may be asked is given up."""
        out: list[Send] = []
        for address in addresses:
            if peer is not None and self._asked.get(address) == peer:
                del self._asked[address]
            if lacked and peer is not None:
                self._lacking.setdefault(address, set()).add(peer)
            if address not in self._searching:
                if len(self._searching) >= SEARCHING:
                    self._wait_search(address)
                    continue
                self._searching.add(address)
            out += self._search(address, peer)
        return out + self._next_searches()

    def _search(self, address: bytes, peer: bytes | None) -> list[Send]:
        """Ask the next linked reader that has not said it lacks this chunk; none left:
        the search ends, and the chunk is given up until it is due again."""
        tried = self._lacking.setdefault(address, set())
        readers = self._readers.get(address, set())
        for other in self._mesh_first(readers):
            if (
                other != peer
                and other not in tried
                and any(self._may_read(other, c, e) for c, e in readers)
            ):
                return self.want(other, [address], search=True)
        self._searching.discard(address)
        if address in self._users:
            self._rounds[address] = self._rounds.get(address, 0) + 1
            self._given_up[address] = None  # its time to ask again is set at the next tick
        return []

    def _wait_search(self, address: bytes) -> None:
        users = self._users.get(address)
        if not users:
            return
        author = self._authors.get(min(users), b"")
        waiting = self._waiting.get(author)
        if waiting is None:
            waiting = self._waiting[author] = {}
            self._turns.append(author)
        waiting[address] = None

    def _next_searches(self) -> list[Send]:
        """Start waiting searches while fewer than SEARCHING run, an author at a time."""
        out: list[Send] = []
        while self._turns and len(self._searching) < SEARCHING:
            author = self._turns.popleft()
            waiting = self._waiting.get(author)
            if not waiting:
                self._waiting.pop(author, None)
                continue
            address = next(iter(waiting))
            del waiting[address]
            if waiting:
                self._turns.append(author)
            else:
                del self._waiting[author]
            if address in self._users and self._asked.get(address) not in self._peers:
                self._searching.add(address)
                out += self._search(address, None)
        return out

    def _forget_search(self, address: bytes) -> None:
        """A chunk is here (or no longer wanted): no search, no waiting, nothing given up."""
        self._searching.discard(address)
        self._rounds.pop(address, None)
        self._given_up.pop(address, None)
        for waiting in self._waiting.values():
            waiting.pop(address, None)

    # --- a partial mesh (spec/sync.md section 7) -------------------------------------

    def retry_lacked(self, now: float = 0.0) -> list[Send]:
        """Ask again for chunks given up (every linked reader lacked them) that are due.
        In a partial mesh a moment travels ahead of its chunks: the neighbour that passed
        it on may still be fetching them, and says it lacks them. A chunk is asked again
        at once for its first RETRY_AT_ONCE rounds, then 1, 2, 4 ... BACKOFF_MAX seconds
        after each round: a chunk that exists nowhere (a hostile index names thousands)
        costs less and less. The shell calls this every second or so (engine.tick)."""
        if self.paused:
            return []
        due: list[bytes] = []
        for address, when in list(self._given_up.items()):
            if when is None:
                rounds = self._rounds.get(address, 1)
                wait = 0.0 if rounds <= RETRY_AT_ONCE else 2.0 ** (rounds - RETRY_AT_ONCE - 1)
                when = self._given_up[address] = now + min(wait, BACKOFF_MAX)
            if when <= now:
                due.append(address)
        out: list[Send] = []
        for address in due:
            del self._given_up[address]
            if address not in self._users or self._asked.get(address) in self._peers:
                continue
            self._lacking.pop(address, None)
            out += self._ask_elsewhere(None, [address], lacked=False)
        return out

    def _mesh_first(self, readers: set[tuple[bytes, int]]) -> list[bytes]:
        """Linked peers, the circle's mesh links first."""
        circles = {circle for circle, _ in readers}
        return sorted(self._peers, key=lambda p: not any(self.mesh(p, c) for c in circles))
