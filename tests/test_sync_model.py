"""The sync core against a simple model (Hypothesis): after any sequence of posts,
membership changes, links and cuts, once everyone can talk, every member holds
every moment of the epochs it is in, and nothing ever reached a non-member.

Only the owner knows a new manifest at once; everyone else learns it as the
daemons do, from manifests sent by members (pushed on change, or asked for by a
have that lacks them)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pmoments.core.sync import (
    T_HAVE,
    T_MANIFESTS,
    T_MOMENTS,
    Action,
    Membership,
    Send,
    SendManifests,
    Sync,
)

NODES = [bytes([i]) * 32 for i in range(5)]
OWNER = NODES[0]  # owns every circle
CIRCLES = [bytes([100 + i]) * 32 for i in range(2)]


@dataclass
class Node:
    key: bytes
    sync: Sync
    # circle -> {(author, seq): epoch}
    held: dict[bytes, dict[tuple[bytes, int], int]] = field(default_factory=dict)
    # circle -> {epoch: members}: the manifests this node holds
    manifests: dict[bytes, dict[int, frozenset[bytes]]] = field(default_factory=dict)

    def view(self, circle: bytes) -> Membership | None:
        known = self.manifests.get(circle)
        return Membership(latest=max(known), members=dict(known)) if known else None


class World:
    def __init__(self) -> None:
        self.nodes = {k: Node(k, Sync(k)) for k in NODES}
        self.membership: dict[bytes, Membership] = {}
        self.links: set[frozenset[bytes]] = set()
        self.queue: deque[tuple[bytes, bytes, dict[int, Any]]] = deque()
        self.violations: list[str] = []
        self.delivered = 0

    def apply(self, sender: bytes, actions: list[Action]) -> None:
        for action in actions:
            if frozenset((sender, action.peer)) not in self.links:
                continue
            if isinstance(action, Send):
                self.queue.append((sender, action.peer, action.body))
            elif isinstance(action, SendManifests):
                known = self.nodes[sender].manifests.get(action.circle, {})
                epochs = sorted(e for e in action.epochs if e in known)
                if epochs:
                    self.queue.append(
                        (sender, action.peer, {0: T_MANIFESTS, 1: action.circle, 2: epochs})
                    )
            else:
                held = self.nodes[sender].held.get(action.circle, {})
                entries = [
                    (action.author, s, e)
                    for (a, s), e in sorted(held.items())
                    if a == action.author
                    and action.first <= s <= action.last
                    and e in action.epochs
                ]
                if entries:
                    self.queue.append(
                        (sender, action.peer, {0: T_MOMENTS, 1: action.circle, 2: entries})
                    )

    def learn(self, key: bytes, circle: bytes, epoch: int) -> None:
        """A node now holds a manifest: as the shell does, it pushes it on to its linked
        peers that the manifest names and that are in the latest epoch it knows, and tells
        its sync core."""
        node = self.nodes[key]
        node.manifests.setdefault(circle, {})[epoch] = self.membership[circle].members[epoch]
        view = node.view(circle)
        assert view is not None
        for link in self.links:
            if key in link:
                (peer,) = link - {key}
                if view.in_latest(peer) and peer in view.members[epoch]:
                    self.queue.append((key, peer, {0: T_MANIFESTS, 1: circle, 2: [epoch]}))
        self.apply(key, node.sync.set_circle(circle, view))

    def set_membership(self, circle: bytes, members: frozenset[bytes]) -> None:
        old = self.membership.get(circle)
        epoch = 0 if old is None else old.latest + 1
        table = dict(old.members) if old else {}
        table[epoch] = members
        self.membership[circle] = Membership(latest=epoch, members=table)
        self.learn(OWNER, circle, epoch)  # only the owner knows at once

    def post(self, author: bytes, circle: bytes) -> None:
        node = self.nodes[author]
        m = node.view(circle)  # as far as the author knows
        if m is None or not m.in_latest(author):
            return
        held = node.held.setdefault(circle, {})
        seq = 1 + max((s for (a, s) in held if a == author), default=0)
        held[(author, seq)] = m.latest
        self.apply(author, node.sync.stored(circle, author, seq, m.latest, None))

    def link(self, a: bytes, b: bytes) -> None:
        if a == b or frozenset((a, b)) in self.links:
            return
        self.links.add(frozenset((a, b)))
        self.apply(a, self.nodes[a].sync.link_up(b))
        self.apply(b, self.nodes[b].sync.link_up(a))

    def cut(self, a: bytes, b: bytes) -> None:
        if frozenset((a, b)) in self.links:
            self.links.discard(frozenset((a, b)))
            self.nodes[a].sync.link_down(b)
            self.nodes[b].sync.link_down(a)
            self.queue = deque(q for q in self.queue if {q[0], q[1]} != {a, b})

    def deliver_one(self) -> None:
        sender, to, body = self.queue.popleft()
        self.delivered += 1
        node = self.nodes[to]
        circle = body[1]
        m = self.membership[circle]
        if body[0] == T_HAVE:
            if not any(to in who for who in m.members.values()):
                self.violations.append("a have reached a node never in the circle")
            self.apply(to, node.sync.received_have(sender, body))
        elif body[0] == T_MANIFESTS:
            if to not in m.members[max(body[2])]:
                self.violations.append("a manifest went to a node outside its epoch")
            for epoch in body[2]:
                # The shell keeps only manifests that name it and that it lacks.
                if to in m.members[epoch] and epoch not in node.manifests.get(circle, {}):
                    self.learn(to, circle, epoch)
        elif body[0] == T_MOMENTS:
            new = []
            for author, seq, epoch in body[2]:
                if to not in m.members[epoch]:
                    self.violations.append(f"epoch {epoch} moment reached a non-member")
                    continue
                if epoch not in node.manifests.get(circle, {}):
                    continue  # the shell cannot open it without the epoch's manifest
                held = node.held.setdefault(circle, {})
                if (author, seq) not in held:
                    held[(author, seq)] = epoch
                    new.append((author, seq, epoch))
            # As the shell does: a batch stored at once, answered by one have per peer.
            self.apply(to, node.sync.stored_many(circle, new, sender))

    def run(self, limit: int = 20_000) -> None:
        for _ in range(limit):
            if not self.queue:
                return
            self.deliver_one()
        raise AssertionError("no quiescence")


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


@settings(max_examples=300, deadline=None)
@given(
    initial=st.lists(
        st.frozensets(st.sampled_from(NODES[1:]), max_size=4),
        min_size=len(CIRCLES),
        max_size=len(CIRCLES),
    ),
    script=events,
)
def test_members_converge_and_nothing_reaches_a_non_member(
    initial: list[frozenset[bytes]], script: list[tuple[Any, ...]]
) -> None:
    world = World()
    for circle, members in zip(CIRCLES, initial, strict=True):
        world.set_membership(circle, members | {OWNER})
    for event in script:
        if event[0] == "post":
            world.post(event[1], event[2])
        elif event[0] == "link":
            world.link(event[1], event[2])
        elif event[0] == "cut":
            world.cut(event[1], event[2])
        elif event[0] == "members":
            world.set_membership(event[1], event[2] | {OWNER})
        else:
            for _ in range(event[1]):
                if world.queue:
                    world.deliver_one()
    # Everyone meets everyone (a partition heals), and the network settles.
    for a in NODES:
        for b in NODES:
            world.link(a, b)
    world.run()
    assert world.violations == []
    for circle in CIRCLES:
        m = world.membership[circle]
        # Exchange is scoped to the latest manifest (spec/sync.md): what only a removed
        # member holds stays with it; everything any current member holds must spread.
        everything: dict[tuple[bytes, int], int] = {}
        for node in world.nodes.values():
            if m.in_latest(node.key):
                everything.update(node.held.get(circle, {}))
        for node in world.nodes.values():
            readable = {k for k, e in everything.items() if node.key in m.members[e]}
            if m.in_latest(node.key):
                # A current member holds every moment of every epoch it was in.
                assert readable <= set(node.held.get(circle, {})), "a member missed moments"
            held_epochs = set(node.held.get(circle, {}).values())
            assert held_epochs <= m.epochs_of(node.key), "a node holds an epoch it was not in"


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
    assert [b[0] for _, _, b in sent] == [T_HAVE, T_HAVE]
    assert world.delivered - 2 <= 2 * 50 + 4  # the second link moved no moment again


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
        _sender, to, body = world.queue[0]
        if body[0] == T_MOMENTS:
            received[to] = received.get(to, 0) + 1
        world.deliver_one()
    assert sorted(received.values()) == [1, 1, 1, 1]
