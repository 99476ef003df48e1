"""The replication core against a simple model (Hypothesis): after any sequence of posts
(some with photos), membership changes, links and cuts, once everyone can talk, every
member holds every moment of the epochs it is in and every chunk those moments use, and
nothing ever reached a non-member.

The model drives `core.replication.engine.Replicator` directly, as the shell does: it
carries out each action (ranges read from what a node holds, envelopes "opened" by a
node that holds the epoch's manifest, chunks served only to readers) and calls back.
Only the owner knows a new manifest at once; everyone else learns it as daemons do,
from members. Manifests and envelopes are stand-ins: the engine treats them as bytes.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pmoments.core.errors import DecodeError
from p2pmoments.core.moment import Kind
from p2pmoments.core.replication.chunks import Lacking, Progress
from p2pmoments.core.replication.engine import (
    Action,
    Delivered,
    Drop,
    KeepManifest,
    KnownManifest,
    KnownRemoval,
    Open,
    Reject,
    Replicator,
    Send,
    SendRange,
    Serve,
    WriteChunks,
    sends,
)
from p2pmoments.core.replication.messages import (
    Chunk,
    Have,
    Manifests,
    Message,
    Moments,
    WantChunks,
)
from p2pmoments.core.replication.rules import Entry

NODES = [bytes([i]) * 32 for i in range(5)]
OWNER = NODES[0]  # owns every circle
CIRCLES = [bytes([100 + i]) * 32 for i in range(2)]


def manifest_bytes(circle: bytes, epoch: int) -> bytes:
    return b"M" + circle + epoch.to_bytes(4, "big")


def envelope(circle: bytes, author: bytes, seq: int, epoch: int) -> bytes:
    return b"E" + circle + author + seq.to_bytes(4, "big") + epoch.to_bytes(4, "big")


def parse_envelope(data: bytes) -> tuple[bytes, bytes, int, int]:
    return data[1:33], data[33:65], int.from_bytes(data[65:69]), int.from_bytes(data[69:73])


def chunks_of(circle: bytes, author: bytes, seq: int) -> tuple[bytes, ...]:
    """A post has a photo of two chunks when its sequence number is even."""
    if seq % 2:
        return ()
    base = circle[:1] + author[:1] + seq.to_bytes(2, "big")
    return tuple(base + bytes([i]) * 28 for i in range(2))


def entry_of(data: bytes) -> Entry:
    """What the engine learns of a stand-in envelope once a node opened it."""
    circle, author, seq, epoch = parse_envelope(data)
    return Entry(
        id=data,
        circle=circle,
        author=author,
        seq=seq,
        epoch=epoch,
        kind=Kind.POST,
        reply_to=None,
        target=None,
        chunks=chunks_of(circle, author, seq),
        size=len(data),
    )


@dataclass
class Node:
    key: bytes
    engine: Replicator
    # circle -> {(author, seq): epoch}
    held: dict[bytes, dict[tuple[bytes, int], int]] = field(default_factory=dict)
    manifests: dict[bytes, set[int]] = field(default_factory=dict)  # what the node keeps
    chunks: set[bytes] = field(default_factory=set)  # on its disk


class World:
    def __init__(self) -> None:
        self.members: dict[bytes, dict[int, frozenset[bytes]]] = {}
        self.nodes = {k: Node(k, self._engine(k)) for k in NODES}
        self.links: set[frozenset[bytes]] = set()
        self.queue: deque[tuple[bytes, bytes, Message]] = deque()
        self.violations: list[str] = []
        self.delivered = 0
        self.chunk_sends: list[tuple[bytes, bytes]] = []  # (to, address), with data

    def _engine(self, key: bytes) -> Replicator:
        def verify_manifest(raw: bytes) -> KnownManifest:
            circle, epoch = raw[1:33], int.from_bytes(raw[33:37])
            members = self.members[circle][epoch]
            if key not in members:
                raise DecodeError("we are not a member of this circle at this epoch")
            return KnownManifest(circle=circle, epoch=epoch, owner=OWNER, members=members, raw=raw)

        def verify_removal(raw: bytes) -> KnownRemoval:
            raise DecodeError("no removals in this model")

        return Replicator(key, verify_manifest=verify_manifest, verify_removal=verify_removal)

    # --- the shell, as the daemons run it ----------------------------------------

    def apply(self, at: bytes, actions: list[Action]) -> None:
        node = self.nodes[at]
        for action in actions:
            if isinstance(action, Send):
                if frozenset((at, action.peer)) in self.links:
                    self.queue.append((at, action.peer, action.message))
            elif isinstance(action, SendRange):
                held = node.held.get(action.circle, {})
                for epoch in sorted(action.epochs):
                    items = [
                        (s, envelope(action.circle, action.author, s, e))
                        for (a, s), e in sorted(held.items())
                        if a == action.author and action.first <= s <= action.last and e == epoch
                    ]
                    self.apply(at, list(sends(action, epoch, items)))
            elif isinstance(action, KeepManifest):
                node.manifests.setdefault(action.manifest.circle, set()).add(action.manifest.epoch)
            elif isinstance(action, Open):
                self.open(at, action)
            elif isinstance(action, Serve):
                self.serve(at, action)
            elif isinstance(action, WriteChunks):
                node.chunks.update(a for a, _ in action.chunks)
                kept = [(a, len(d)) for a, d in action.chunks]
                self.apply(at, node.engine.chunks_written(action.peer, kept, 0, 0.0))
            elif isinstance(action, Drop | Reject):
                self.violations.append(f"{action!r} between honest nodes")
            elif isinstance(action, Delivered):
                # A delivered mark never claims more than the member holds.
                theirs = self.nodes[action.person].held.get(action.circle, {})
                for epoch, seq in action.held:
                    if theirs.get((at, seq)) != epoch:
                        self.violations.append(f"{action!r} claims what its member lacks")
            else:
                assert isinstance(action, Progress)

    def open(self, at: bytes, action: Open) -> None:
        node = self.nodes[at]
        entries = []
        for data in action.envelopes:
            circle, _, _, epoch = parse_envelope(data)
            if at not in self.members[circle][epoch]:
                self.violations.append(f"an epoch {epoch} moment reached a non-member")
            if epoch not in node.manifests.get(circle, set()):
                continue
            entries.append(entry_of(data))
        # A moment of an epoch whose manifest the node lacks cannot be opened, so it is
        # not kept (the shell records why); the engine does not count that as junk here.
        accepted, actions = node.engine.opened(action.peer, action.circle, entries, [], {}, 0.0)
        held = node.held.setdefault(action.circle, {})
        new = [e for e in accepted if (e.author, e.seq) not in held]
        for e in new:
            held[(e.author, e.seq)] = e.epoch
        missing = {
            e.id: Lacking(len(e.chunks), tuple(c for c in e.chunks if c not in node.chunks))
            for e in new
            if e.chunks
        }
        self.apply(at, actions)
        # As the shell does: a batch stored at once, answered by at most one have per peer.
        self.apply(at, node.engine.stored(action.circle, new, action.peer, missing))

    def serve(self, at: bytes, action: Serve) -> None:
        node = self.nodes[at]
        for address in action.addresses:
            uses = [
                (c, e)
                for c, held in node.held.items()
                for (a, s), e in held.items()
                if address in chunks_of(c, a, s)
            ]
            if not any(node.engine.may_read(action.peer, c, e) for c, e in uses):
                continue  # never a chunk of a moment the peer may not read
            if address in node.chunks:
                self.chunk_sends.append((action.peer, address))
                for c, e in uses:
                    if action.peer not in self.members[c][e]:
                        self.violations.append("a chunk reached a non-member")
                self.queue.append((at, action.peer, Chunk(address=address, data=b"x" * 10)))
            else:
                self.queue.append((at, action.peer, Chunk(address=address, data=None)))

    def learn(self, key: bytes, circle: bytes, epoch: int) -> None:
        node = self.nodes[key]
        node.manifests.setdefault(circle, set()).add(epoch)
        known = KnownManifest(
            circle=circle,
            epoch=epoch,
            owner=OWNER,
            members=self.members[circle][epoch],
            raw=manifest_bytes(circle, epoch),
        )
        self.apply(key, node.engine.add_manifest(known))

    def set_membership(self, circle: bytes, members: frozenset[bytes]) -> None:
        epochs = self.members.setdefault(circle, {})
        epoch = len(epochs)
        epochs[epoch] = members
        self.learn(OWNER, circle, epoch)  # only the owner knows at once

    def post(self, author: bytes, circle: bytes) -> None:
        node = self.nodes[author]
        known = node.manifests.get(circle)
        if not known or author not in self.members[circle][max(known)]:
            return
        epoch = max(known)
        held = node.held.setdefault(circle, {})
        seq = 1 + max((s for (a, s) in held if a == author), default=0)
        held[(author, seq)] = epoch
        data = envelope(circle, author, seq, epoch)
        node.chunks.update(chunks_of(circle, author, seq))  # our own photo: on our disk
        self.apply(author, node.engine.stored(circle, [entry_of(data)], None, {}, {data: data}))

    def link(self, a: bytes, b: bytes) -> None:
        if a == b or frozenset((a, b)) in self.links:
            return
        self.links.add(frozenset((a, b)))
        for x, y in ((a, b), (b, a)):
            node = self.nodes[x]
            self.apply(x, node.engine.link_up(y))
            # Transfers a cut left unfinished are resumed with the new peer.
            missing = [
                (
                    envelope(c, au, s, e),
                    c,
                    e,
                    Lacking(2, tuple(k for k in chunks_of(c, au, s) if k not in node.chunks)),
                )
                for c, held in node.held.items()
                for (au, s), e in held.items()
                if chunks_of(c, au, s) and any(k not in node.chunks for k in chunks_of(c, au, s))
            ]
            self.apply(x, node.engine.resume(y, missing))

    def cut(self, a: bytes, b: bytes) -> None:
        if frozenset((a, b)) in self.links:
            self.links.discard(frozenset((a, b)))
            self.queue = deque(q for q in self.queue if {q[0], q[1]} != {a, b})
            self.apply(a, self.nodes[a].engine.link_down(b))
            self.apply(b, self.nodes[b].engine.link_down(a))

    def deliver_one(self) -> None:
        sender, to, message = self.queue.popleft()
        self.delivered += 1
        if isinstance(message, Manifests):
            for raw in message.manifests:
                circle, epoch = raw[1:33], int.from_bytes(raw[33:37])
                if to not in self.members[circle][epoch]:
                    self.violations.append("a manifest went to a node outside its epoch")
        elif isinstance(message, Have) and not any(
            to in who for who in self.members[message.circle].values()
        ):
            self.violations.append("a have reached a node never in the circle")
        self.apply(to, self.nodes[to].engine.receive(sender, message, 0.0))

    def run(self, limit: int = 50_000) -> None:
        for _ in range(limit):
            if not self.queue:
                return
            self.deliver_one()
        raise AssertionError("no quiescence")

    def heal(self) -> None:
        """Everyone meets everyone (a partition heals), twice over, and it settles."""
        for _ in range(2):
            for a in NODES:
                for b in NODES:
                    self.cut(a, b)
            for a in NODES:
                for b in NODES:
                    self.link(a, b)
            self.run()


events = st.lists(
    st.one_of(
        st.tuples(st.just("post"), st.sampled_from(NODES), st.sampled_from(CIRCLES)),
        st.tuples(st.just("link"), st.sampled_from(NODES), st.sampled_from(NODES)),
        st.tuples(st.just("cut"), st.sampled_from(NODES), st.sampled_from(NODES)),
        st.tuples(
            st.just("members"),
            st.sampled_from(CIRCLES),
            st.frozensets(st.sampled_from(NODES[1:]), max_size=4),
        ),
        st.tuples(st.just("deliver"), st.integers(1, 5)),
    ),
    max_size=60,
)


@settings(max_examples=int(os.environ.get("P2PM_MODEL_EXAMPLES", "300")))
@given(
    initial=st.lists(
        st.frozensets(st.sampled_from(NODES[1:]), max_size=4),
        min_size=len(CIRCLES),
        max_size=len(CIRCLES),
    ),
    script=events,
)
def test_members_converge_and_nothing_reaches_a_non_member(
    initial: list[frozenset[bytes]], script: list[tuple[object, ...]]
) -> None:
    world = World()
    for circle, members in zip(CIRCLES, initial, strict=True):
        world.set_membership(circle, members | {OWNER})
    for event in script:
        if event[0] == "post":
            world.post(event[1], event[2])  # type: ignore[arg-type]
        elif event[0] == "link":
            world.link(event[1], event[2])  # type: ignore[arg-type]
        elif event[0] == "cut":
            world.cut(event[1], event[2])  # type: ignore[arg-type]
        elif event[0] == "members":
            world.set_membership(event[1], event[2] | {OWNER})  # type: ignore[arg-type, operator]
        else:
            for _ in range(event[1]):  # type: ignore[call-overload]
                if world.queue:
                    world.deliver_one()
    world.heal()
    assert world.violations == []
    for circle in CIRCLES:
        epochs = world.members[circle]
        latest = epochs[max(epochs)]
        # Exchange is scoped to the latest manifest (spec/sync.md): what only a removed
        # member holds stays with it; everything any current member holds must spread.
        everything: dict[tuple[bytes, int], int] = {}
        for node in world.nodes.values():
            if node.key in latest:
                everything.update(node.held.get(circle, {}))
        for node in world.nodes.values():
            readable = {k for k, e in everything.items() if node.key in epochs[e]}
            if node.key in latest:
                held = node.held.get(circle, {})
                assert readable <= set(held), "a member missed moments"
                wanted = {c for (a, s) in readable for c in chunks_of(circle, a, s)}
                assert wanted <= node.chunks, "a member missed chunks"
            member_of = {e for e, who in epochs.items() if node.key in who}
            assert set(node.held.get(circle, {}).values()) <= member_of, "an epoch not its own"


def test_an_idle_resync_of_two_peers_in_sync_is_one_small_have_each_way() -> None:
    world = World()
    world.set_membership(CIRCLES[0], frozenset(NODES[:2]))
    for _ in range(50):
        world.post(NODES[0], CIRCLES[0])
        world.post(NODES[1], CIRCLES[0])
    world.link(NODES[0], NODES[1])
    world.run()
    world.cut(NODES[0], NODES[1])
    world.link(NODES[0], NODES[1])
    sent = list(world.queue)
    world.run()
    assert [type(m) for _, _, m in sent] == [Have, Have]
    assert world.delivered - 2 <= 2 * 50 + 4 + 100  # the second link moved no moment again


def test_a_post_reaches_a_linked_member_once_even_through_many_relays() -> None:
    world = World()
    world.set_membership(CIRCLES[0], frozenset(NODES))
    for a in NODES:
        for b in NODES:
            world.link(a, b)
    world.run()
    received: dict[bytes, int] = {}
    world.post(NODES[0], CIRCLES[0])
    while world.queue:
        _sender, to, message = world.queue[0]
        if isinstance(message, Moments):
            received[to] = received.get(to, 0) + 1
        world.deliver_one()
    assert sorted(received.values()) == [1, 1, 1, 1]


def test_a_member_linked_to_two_holders_fetches_each_chunk_once() -> None:
    world = World()
    world.set_membership(CIRCLES[0], frozenset(NODES[:3]))
    for a, b in ((NODES[0], NODES[1]),):
        world.link(a, b)
    world.run()
    world.post(NODES[0], CIRCLES[0])
    world.post(NODES[0], CIRCLES[0])  # seq 2: a photo of two chunks
    world.run()
    assert set(chunks_of(CIRCLES[0], NODES[0], 2)) <= world.nodes[NODES[1]].chunks
    world.chunk_sends.clear()
    world.link(NODES[2], NODES[0])
    world.link(NODES[2], NODES[1])  # both hold the photo
    world.run()
    got = [a for to, a in world.chunk_sends if to == NODES[2]]
    assert sorted(got) == sorted(chunks_of(CIRCLES[0], NODES[0], 2))  # each once


def test_a_holder_that_lacks_a_chunk_or_leaves_sends_the_asker_elsewhere() -> None:
    """Carol gets the moment from Bob, who has not got its photo yet: Bob says so, and
    Carol asks Alice; when Alice's link goes before she answers, Carol asks again at the
    next link-up."""
    alice, bob, carol = NODES[:3]
    world = World()
    world.set_membership(CIRCLES[0], frozenset(NODES[:3]))
    world.post(alice, CIRCLES[0])
    world.post(alice, CIRCLES[0])
    photo = set(chunks_of(CIRCLES[0], alice, 2))
    world.link(alice, bob)
    world.run()
    world.nodes[bob].chunks -= photo  # Bob lost the photo (but holds the moment)
    world.link(bob, carol)
    world.run()
    assert not photo & world.nodes[carol].chunks  # asked Bob, who lacks it: no one else yet
    wants = []
    world.link(carol, alice)
    while world.queue:
        sender, to, message = world.queue[0]
        if isinstance(message, WantChunks) and sender == carol:
            wants.append((to, set(message.addresses)))
        world.deliver_one()
    assert (alice, photo) in wants
    assert photo <= world.nodes[carol].chunks
    assert world.violations == []


def test_nothing_of_a_circle_reaches_a_linked_friend_outside_it() -> None:
    world = World()
    world.set_membership(CIRCLES[0], frozenset(NODES[:2]))
    for b in NODES[1:]:
        world.link(NODES[0], b)
    world.post(NODES[0], CIRCLES[0])
    world.post(NODES[0], CIRCLES[0])
    seen: dict[bytes, list[type]] = {}
    while world.queue:
        _sender, to, message = world.queue[0]
        seen.setdefault(to, []).append(type(message))
        world.deliver_one()
    assert set(seen) <= {NODES[0], NODES[1]}  # the author and the member: no one else
    assert Chunk in seen[NODES[1]]
    assert not world.violations


def test_a_friend_outside_the_circle_asking_for_its_chunks_gets_nothing() -> None:
    """Chunk addresses are not secret (they are hashes): a linked non-member who asks for
    them gets no chunk and not even an "I do not hold it"."""
    world = World()
    world.set_membership(CIRCLES[0], frozenset(NODES[:2]))
    world.link(NODES[0], NODES[2])
    world.post(NODES[0], CIRCLES[0])
    world.post(NODES[0], CIRCLES[0])
    world.run()
    photo = chunks_of(CIRCLES[0], NODES[0], 2)
    world.queue.append((NODES[2], NODES[0], WantChunks(addresses=photo)))
    world.run()
    assert not [a for to, a in world.chunk_sends if to == NODES[2]]
    assert not any(to == NODES[2] and isinstance(m, Chunk) for _, to, m in world.queue)
