"""Replication between the members of a circle, sans-I/O (spec/sync.md).

`Replicator` takes what happens (a link came up or went, a message arrived, we
stored moments, chunks were written) with the time, and returns actions for the
shell to carry out in order: messages to send, ranges to read and send,
manifests to keep, envelopes to open, chunks to serve or write, peers to drop.
Everything that decides lives here; the shell (p2pmoments.replication) reads
and writes the store and the disk, checks signatures on worker threads, paces
peers, and calls back with the results.

    messages.decode ─► Replicator.receive(peer, message, now) ─► actions
                       Replicator.opened(...)  (the envelopes it asked to open)
                       Replicator.stored(...)  (what the shell stored)
                       Replicator.chunks_written(...)

Why so long: every entry point the shell calls back is here, so the decisions stay in one
place; the actions it returns are in actions.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from p2pmoments.core.budget import JunkScore
from p2pmoments.core.errors import NO_KEY_YET, DecodeError
from p2pmoments.core.replication import rules
from p2pmoments.core.replication.actions import (
    Action,
    Delivered,
    Drop,
    KeepManifest,
    KnownManifest,
    KnownRemoval,
    LeaveCircle,
    Open,
    Reject,
    Serve,
    WriteChunks,
)
from p2pmoments.core.replication.chunks import ChunkScheduler, Lacking, Progress, Refill
from p2pmoments.core.replication.messages import (
    MAX_MANIFESTS,
    Chunk,
    Have,
    Manifests,
    Message,
    Moments,
    Removed,
    Span,
    WantChunks,
)
from p2pmoments.core.replication.rules import Entry
from p2pmoments.core.replication.spans import covered, range_batches
from p2pmoments.core.replication.vectors import (
    Eager,
    Membership,
    Send,
    SendManifests,
    SendRange,
    VectorSync,
    everyone,
    same_person,
)

__all__ = [
    "JUNK_DECAY",
    "JUNK_LIMIT",
    "MAX_BATCH",
    "Action",
    "Delivered",
    "Drop",
    "KeepManifest",
    "KnownManifest",
    "KnownRemoval",
    "Lacking",
    "LeaveCircle",
    "Open",
    "Progress",
    "Refill",
    "Reject",
    "Replicator",
    "Send",
    "SendRange",
    "Serve",
    "WriteChunks",
]

JUNK_LIMIT = 256  # units of junk (malformed, forged, unasked for) before a peer is dropped
JUNK_DECAY = 4.0  # units forgiven a second
MAX_BATCH = 900 * 1024  # bytes of envelopes in one moments message (a link message: 1 MiB)
RETRY_MAX = 15.0  # seconds at most between asking again for chunks every peer lacked
RETRY_FRESH = 30  # asked again each second this many times after a moment needing chunks


VerifyManifest = Callable[[bytes], KnownManifest]  # raises DecodeError; only circles we are in
VerifyRemoval = Callable[[bytes], KnownRemoval]  # raises DecodeError


@dataclass(slots=True)
class _Peer:
    junk: JunkScore = field(default_factory=lambda: JunkScore(JUNK_LIMIT, JUNK_DECAY))
    dropped: bool = False


class Replicator:
    """Every replication decision of one daemon."""

    def __init__(
        self,
        me: bytes,
        *,
        verify_manifest: VerifyManifest,
        verify_removal: VerifyRemoval,
        person_of: Callable[[bytes], bytes] = same_person,
        eager: Eager = everyone,
    ) -> None:
        self.me = me
        # Whose device a key is (spec/devices.md section 7): manifests name persons.
        self._person_of = person_of
        self._verify_manifest = verify_manifest
        self._verify_removal = verify_removal
        self._vectors = VectorSync(me, eager)
        self._chunks = ChunkScheduler(self.may_read)
        self._chunks.mesh = eager
        self._manifests: dict[bytes, dict[int, KnownManifest]] = {}
        self._left: set[bytes] = set()  # circles the owner removed us from
        self._peers: dict[bytes, _Peer] = {}
        # (peer, circle) -> the span of the moments being opened (spec/sync.md 4.11).
        self._spans: dict[tuple[bytes, bytes], Span] = {}
        self._retry_at = 0.0  # when to ask again for chunks every linked peer lacked
        self._retries = 0  # times asked again since a moment came that needs chunks

    # --- what we hold ------------------------------------------------------------

    def load(
        self,
        manifests: Iterable[KnownManifest],
        holdings: Iterable[tuple[bytes, bytes, int, int]],
        left: Iterable[bytes] = (),
    ) -> None:
        """At start-up: the manifests we hold, (circle, author, epoch, highest seq) of the
        moments we hold, and the circles we were removed from."""
        self._left = set(left)
        for manifest in manifests:
            self._manifests.setdefault(manifest.circle, {})[manifest.epoch] = manifest
        for circle in self._manifests:
            if circle not in self._left:
                self._vectors.set_circle(circle, self._membership(circle))
        for circle, author, epoch, seq in holdings:
            self._vectors.seed(circle, author, epoch, seq)

    def add_manifest(self, manifest: KnownManifest) -> list[Action]:
        """A manifest we made or kept: the linked peers it names (in the latest epoch)
        get it, and every linked member learns which manifests we hold."""
        epochs = self._manifests.setdefault(manifest.circle, {})
        if manifest.epoch in epochs:
            return []
        epochs[manifest.epoch] = manifest
        me = self._person_of(self.me)
        if manifest.members and me in manifest.members and manifest.epoch >= max(epochs):
            self._left.discard(manifest.circle)  # added (back): a member again
        if manifest.circle in self._left:
            return []
        membership = self._membership(manifest.circle)
        out: list[Action] = [
            Send(peer, Manifests(manifests=(manifest.raw,)))
            for peer in list(self._peers)
            # Only to those it names: an old epoch's membership is not for later members.
            if membership.in_latest(peer) and self._person_of(peer) in manifest.members
        ]
        out += self._expand(self._vectors.set_circle(manifest.circle, membership))
        return out

    def forget_circle(self, circle: bytes) -> None:
        """We deleted a circle and all we held of it."""
        self._manifests.pop(circle, None)
        self._left.discard(circle)
        self._vectors.forget_circle(circle)

    def membership(self, circle: bytes) -> Membership | None:
        """Who is in a circle, per epoch, from the manifests we hold."""
        return self._membership(circle) if circle in self._manifests else None

    def manifest(self, circle: bytes, epoch: int) -> KnownManifest | None:
        """A manifest we hold."""
        return self._manifests.get(circle, {}).get(epoch)

    def behind(self, peer: bytes, have: Have) -> int:
        """How many moments a linked member's have claims that we lack and may read (0
        for anyone else): the shell readies itself for a catch-up that big."""
        if peer not in self._peers or have.circle in self._left:
            return 0
        membership = self.membership(have.circle)
        if membership is None or not membership.in_latest(peer):
            return 0
        return self._vectors.behind(have)

    def may_read(self, peer: bytes, circle: bytes, epoch: int) -> bool:
        """True if `peer` may receive what belongs to `circle` at `epoch` (a moment, or
        a chunk of one): it is in the latest manifest and in that epoch."""
        if circle in self._left or circle not in self._manifests:
            return False
        return self._membership(circle).may_read(peer, epoch)

    def circles_of(self, peer: bytes) -> list[bytes]:
        """The circles whose traffic may go to `peer`."""
        return self._vectors.circles_of(peer)

    def statistics(self) -> dict[str, int]:
        """A snapshot of what replication is doing."""
        return {
            "linked": len(self._peers),
            "ranges_refused": self._vectors.refused,
            "ranges_sent_again": self._vectors.resent,
            **self._chunks.statistics(),
        }

    # --- links ---------------------------------------------------------------------

    def link_up(self, peer: bytes) -> list[Action]:
        """A link is open: tell the peer what we hold of every circle it is in."""
        self._peers[peer] = _Peer()
        self._chunks.link_up(peer)
        return self._expand(self._vectors.link_up(peer))

    def relink(self, peer: bytes) -> list[Action]:
        """A linked peer's circles changed (a roster made its device someone's): tell it
        what we hold of each, as at link-up, keeping its transfers."""
        if peer not in self._peers:
            return []
        return self._expand(self._vectors.link_up(peer))

    def keys_arrived(self) -> list[Action]:
        """Epoch keys arrived from another device of ours: ask every peer again for what
        we could not open before (spec/devices.md section 9)."""
        return self._expand(self._vectors.retell())

    def link_down(self, peer: bytes) -> list[Action]:
        """A link went: chunks asked of the peer are asked of someone else."""
        self._peers.pop(peer, None)
        self._spans = {k: v for k, v in self._spans.items() if k[0] != peer}
        asks = self._vectors.link_down(peer)
        return [*self._chunks.link_down(peer), *self._expand(asks)]

    def tick(self, now: float) -> list[Action]:
        """Time passed (the shell calls this every second or so): what we asked of a
        peer that has not answered in ASK_PATIENCE seconds, we ask of another; chunks
        every linked peer lacked are asked again (a neighbour may have them now)."""
        out = self._expand(self._vectors.tick(now))
        if now >= self._retry_at:
            # Each second for the first RETRY_FRESH tries after a moment came that needs
            # chunks (its relays are fetching them too: backing off at once would double
            # the wait at each hop), then 2, 4 ... 15 s apart.
            out += self._chunks.retry_lacked(now)
            self._retries += 1
            gap = 1.0 if self._retries <= RETRY_FRESH else 2.0 ** (self._retries - RETRY_FRESH)
            self._retry_at = now + min(gap, RETRY_MAX)
        return out

    # --- messages --------------------------------------------------------------------

    def receive(self, peer: bytes, message: Message, now: float) -> list[Action]:
        """A message from a linked peer."""
        if peer not in self._peers:
            return []
        return [*self._span_left(peer), *self._receive(peer, message, now)]

    def _receive(self, peer: bytes, message: Message, now: float) -> list[Action]:
        if isinstance(message, Manifests):
            return self._on_manifests(peer, message, now)
        if isinstance(message, Have):
            out = self._expand(self._vectors.received_have(peer, message, now))
            membership = self.membership(message.circle)
            if membership is not None and membership.in_latest(peer):
                # Only epochs it is in, and never past what we posted: a member's claims
                # are about itself, and stay bounded whatever it says.
                held, epochs = self._vectors.held(message.circle), membership.epochs_of(peer)
                ours = tuple(
                    sorted(
                        (e, min(s, held.get((a, e), 0)))
                        for (a, e), s in message.vector.items()
                        if a == self.me and e in epochs and s > 0 and held.get((a, e), 0) > 0
                    )
                )
                if ours:
                    out.append(Delivered(self._person_of(peer), message.circle, ours))
            return out
        if isinstance(message, Moments):
            return self._on_moments(peer, message, now)
        if isinstance(message, WantChunks):
            return [Serve(peer, message.addresses)] if message.addresses else []
        if isinstance(message, Chunk):
            return self.receive_chunks(peer, [message], now)
        return self._on_removed(peer, message, now)

    def receive_chunks(self, peer: bytes, chunks: Sequence[Chunk], now: float) -> list[Action]:
        """Chunk messages from one peer, handled together (written in one go)."""
        out: list[Action] = []
        got: list[tuple[bytes, bytes]] = []
        lacking: list[bytes] = []
        for chunk in chunks:
            if not self._chunks.asked_of(peer, chunk.address):
                out += self.junk(peer, 4, "a chunk we did not ask for", now)
            elif chunk.data is None:
                lacking.append(chunk.address)  # it does not hold it: ask someone else
            else:
                got.append((chunk.address, chunk.data))
        if lacking:
            out += self._chunks.lacked(peer, lacking)
        if got:
            # Ask for the next ones first, so they travel while these are written.
            out += self._chunks.arrived(peer, [a for a, _ in got])
            out.append(WriteChunks(peer, tuple(got)))
        return out

    def junk(self, peer: bytes, units: float, what: str, now: float) -> list[Action]:
        """Count junk from a peer (malformed, forged, unasked for); past the limit, drop."""
        state = self._peers.get(peer)
        if state is None or state.dropped or not state.junk.add(units, now):
            return []
        state.dropped = True
        return [Drop(peer, f"too much junk (last: {what})")]

    # --- what the shell did ---------------------------------------------------------

    def opened(
        self,
        peer: bytes | None,
        circle: bytes,
        entries: Sequence[Entry],
        rejected: Sequence[tuple[str, int]],
        owners: Mapping[bytes, tuple[bytes, bytes]],
        now: float,
        files: Mapping[bytes, bytes] | None = None,
        versions: Mapping[bytes, int] | None = None,
    ) -> tuple[list[Entry], list[Action]]:
        """Envelopes of an `Open` were verified: `entries` opened, `rejected` did not
        (reason, size). `owners` gives (circle, author) of the stored moments they answer
        or retract; `files` and `versions` what versions need (rules.Context). Returns
        what to store, and actions (rejections recorded, junk)."""
        verdicts = rules.judge(
            entries,
            rules.Context(
                sender=peer,
                circle=circle,
                membership=self.membership(circle),
                owners=owners,
                files=files or {},
                versions=versions or {},
            ),
        )
        refused = [*rejected, *verdicts.rejected]
        out: list[Action] = []
        if refused:
            out.append(Reject(peer, tuple(refused)))
            junk = [r for r in refused if r[0] != NO_KEY_YET]
            # Not held, and asked again once keys come (spec/devices.md section 9).
            span = None
            if peer is not None and len(junk) < len(refused):
                span = self._spans.pop((peer, circle), None)
            if peer is not None and span is not None:
                self._vectors.missed(peer, circle, span[0], span[1])
            if peer is not None and junk:
                out += self.junk(peer, len(junk), "moments that failed verification", now)
        return verdicts.accepted, out

    def stored(
        self,
        circle: bytes,
        entries: Sequence[Entry],
        source: bytes | None,
        missing: Mapping[bytes, Lacking] = {},
        envelopes: Mapping[bytes, bytes] = {},
    ) -> list[Action]:
        """These moments of `circle` are newly stored: ours if `source` is None, else from
        that peer. `missing` gives, for moments with photos or files not all here, what
        they lack; `envelopes` may give the envelopes of the entries (ours, just sealed),
        sent as they are instead of read back."""
        held = [(e.author, e.seq, e.epoch) for e in entries]
        span = self._spans.pop((source, circle), None) if source is not None else None
        more = None if span is None or source is None else covered(span, source)
        out = self._expand(
            self._vectors.stored(circle, [*held, *([more] if more else [])], source),
            fresh={(e.author, e.seq): envelopes[e.id] for e in entries if e.id in envelopes},
        )
        if any(entry.id in missing for entry in entries):
            self._retry_at, self._retries = 0.0, 0  # its relay may lack them a moment
        for entry in entries:
            if entry.id in missing:
                lack = missing[entry.id]
                out += self._chunks.need(
                    entry.id,
                    entry.circle,
                    entry.epoch,
                    lack.total,
                    lack.missing,
                    source,
                    lack.unnamed,
                    author=entry.author,
                )
        return out

    def resume(
        self, peer: bytes, missing: Iterable[tuple[bytes, bytes, int, Lacking]]
    ) -> list[Action]:
        """At link-up: (moment, circle, epoch, what it lacks) of transfers a cut left
        unfinished, in circles `peer` is in: ask it."""
        out: list[Action] = []
        for moment, circle, epoch, lack in missing:
            if self.may_read(peer, circle, epoch):
                out += self._chunks.need(
                    moment, circle, epoch, lack.total, lack.missing, peer, lack.unnamed
                )
        return out

    def named(
        self,
        peer: bytes | None,
        moment: bytes,
        circle: bytes,
        epoch: int,
        count: int,
        missing: Sequence[bytes],
    ) -> list[Action]:
        """A piece of a chunk index of `moment` is here (from `peer`, or found on disk)
        and names `count` of its chunks, `missing` of them not here: ask for those."""
        asks, progress = self._chunks.named(moment, circle, epoch, count, missing, peer)
        return [*asks, *progress]

    def chunks_written(
        self, peer: bytes, kept: Sequence[tuple[bytes, int]], bad: int, now: float
    ) -> list[Action]:
        """Chunks from a `WriteChunks`: `kept` (address, size) are on disk; `bad` of them
        were not what their address names."""
        out: list[Action] = list(self._chunks.kept(kept, peer))
        if bad:
            out += self.junk(peer, 16 * bad, "chunks not what their address names", now)
        return out

    def refill(
        self, moment: bytes, circle: bytes, epoch: int, lack: Lacking, peer: bytes | None
    ) -> list[Action]:
        """After a `Refill`: what `moment` lacks now that its next index piece is read."""
        asks, progress = self._chunks.refill(moment, circle, epoch, lack, peer)
        return [*asks, *progress]

    def disk_full(self) -> None:
        """A write found the disk full: fetching chunks pauses (links stay up)."""
        self._chunks.pause()

    def chunks_unwritten(self, peer: bytes, addresses: Sequence[bytes]) -> list[Action]:
        """Chunks from a `WriteChunks` that could not be written, the disk being full:
        fetching pauses, and they are asked for again when it resumes."""
        self._chunks.pause()
        return list(self._chunks.unwritten(peer, addresses))

    def room(self) -> list[Action]:
        """There is room on the disk again: fetching resumes."""
        return list(self._chunks.resume())

    # --- internals -----------------------------------------------------------------------

    def _membership(self, circle: bytes) -> Membership:
        epochs = self._manifests[circle]
        return Membership(
            latest=max(epochs),
            members={e: m.members for e, m in epochs.items()},
            person_of=self._person_of,
        )

    def _on_moments(self, peer: bytes, message: Moments, now: float) -> list[Action]:
        """Moments from a member are opened, if they continue what we hold (section 4, point 11)."""
        circle, span = message.circle, message.span
        membership = self.membership(circle)
        if circle in self._left:
            return []
        if membership is None or not membership.in_latest(peer):
            # Only the circle's current members exchange its moments; a range we cannot
            # take yet is asked for again once we can (its sender believes we hold it).
            if span is not None:
                self._vectors.missed(peer, circle, span[0], span[1])
            return []
        if span is None:
            return [Open(peer, circle, message.envelopes)] if message.envelopes else []
        author, epoch, first, _ = span
        if not self._vectors.connects(circle, author, epoch, first):
            return self._expand(self._vectors.gap(peer, circle, author, epoch, now))
        self._spans[(peer, circle)] = span
        if not message.envelopes:
            return self._span_left(peer)  # nothing in it: its author says so
        return [Open(peer, circle, message.envelopes)]

    def _span_left(self, peer: bytes) -> list[Action]:
        """Spans whose envelopes were all held already (nothing new stored): what their
        author says exists no more of is held now."""
        out: list[Action] = []
        for key in [k for k in self._spans if k[0] == peer]:
            more = covered(self._spans.pop(key), peer)
            if more is not None:
                out += self._expand(self._vectors.stored(key[1], [more], peer))
        return out

    def _on_manifests(self, peer: bytes, message: Manifests, now: float) -> list[Action]:
        out: list[Action] = []
        for raw in message.manifests[:MAX_MANIFESTS]:
            try:
                manifest = self._verify_manifest(raw)  # only circles we are in
            except DecodeError as exc:
                out += self.junk(peer, 1, f"a manifest: {exc}", now)
                continue
            if self.manifest(manifest.circle, manifest.epoch) is not None:
                continue
            joined = manifest.circle not in self._manifests
            out.append(KeepManifest(manifest, joined))
            out += self.add_manifest(manifest)  # pass it on: manifests travel first
        return out

    def _on_removed(self, peer: bytes, message: Removed, now: float) -> list[Action]:
        out: list[Action] = []
        for raw in message.notices:
            try:
                removal = self._verify_removal(raw)
            except DecodeError as exc:
                out += self.junk(peer, 1, f"a removal notice: {exc}", now)
                continue
            epochs = self._manifests.get(removal.circle)
            if (
                epochs is None
                or removal.member != self._person_of(self.me)
                or removal.circle in self._left
                or epochs[max(epochs)].owner != removal.owner
                or (
                    max(epochs) >= removal.epoch
                    and self._person_of(self.me) in epochs[max(epochs)].members
                )
            ):
                continue  # not ours, not its owner, or a newer manifest names us again
            self._left.add(removal.circle)
            self._vectors.leave_circle(removal.circle)
            out.append(LeaveCircle(removal))
        return out

    def _expand(
        self,
        actions: Sequence[Send | SendManifests | SendRange],
        fresh: Mapping[tuple[bytes, int], bytes] = {},
    ) -> list[Action]:
        """Turn the vector decisions into messages where the engine has what they need:
        manifests it holds, and our own moments just stored."""
        out: list[Action] = []
        for action in actions:
            if isinstance(action, SendManifests):
                out += self._send_manifests(action)
            elif isinstance(action, SendRange) and all(
                (action.author, s) in fresh for s in range(action.first, action.last + 1)
            ):
                items = [
                    (s, fresh[(action.author, s)]) for s in range(action.first, action.last + 1)
                ]
                out += sends(action, min(action.epochs), items)
            else:
                out.append(action)
        return out

    def _send_manifests(self, action: SendManifests) -> list[Action]:
        membership = self.membership(action.circle)
        if membership is None or not membership.in_latest(action.peer):
            return []  # checked again at the point of sending
        raws = [
            self._manifests[action.circle][e].raw
            for e in sorted(action.epochs)
            if e in self._manifests[action.circle]
            and (e == membership.latest or membership.may_read(action.peer, e))
        ]
        return [
            Send(action.peer, Manifests(manifests=tuple(raws[i : i + MAX_MANIFESTS])))
            for i in range(0, len(raws), MAX_MANIFESTS)
        ]


def sends(action: SendRange, epoch: int, items: Sequence[tuple[int, bytes]]) -> list[Send]:
    """The moments messages of a range: its (seq, envelope) `items` of `epoch`, at most
    MAX_BATCH bytes of envelopes each, each naming what it covers (spec/sync.md 4.11)."""
    return range_batches(action, epoch, items, MAX_BATCH)
