"""The partial mesh (core/mesh.py, spec/sync.md section 7): every member computes its own
links from the member list, yet together they connect everyone up, at a bounded degree."""

from __future__ import annotations

from collections.abc import Callable, Collection

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pmoments.core.mesh import RINGS, neighbours, ring_order

KEYS = st.lists(st.binary(min_size=32, max_size=32), min_size=2, max_size=150, unique=True)


def links(
    members: list[bytes], down_of: Callable[[bytes], Collection[bytes]], up: set[bytes]
) -> dict[bytes, set[bytes]]:
    """The links among the members up: a link is made if either end wants it (whoever
    dials, the other accepts a co-member), and only between two members up."""
    graph: dict[bytes, set[bytes]] = {m: set() for m in up}
    for member in up:
        for other in neighbours(members, member, down_of(member)):
            if other in up:
                graph[member].add(other)
                graph[other].add(member)
    return graph


def connected(graph: dict[bytes, set[bytes]]) -> bool:
    if not graph:
        return True
    start = next(iter(graph))
    seen, todo = {start}, [start]
    while todo:
        for other in graph[todo.pop()]:
            if other not in seen:
                seen.add(other)
                todo.append(other)
    return len(seen) == len(graph)


@settings(max_examples=150, deadline=None)
@given(KEYS, st.data())
def test_the_members_up_are_connected_and_each_holds_at_most_six_links(
    members: list[bytes], data: st.DataObject
) -> None:
    offline = set(data.draw(st.sets(st.sampled_from(members), max_size=len(members) - 1)))
    up = set(members) - offline
    graph = links(members, lambda _: offline, up)
    assert connected(graph)
    assert max(len(others) for others in graph.values()) <= 2 * RINGS
    if len(up) > 2 * RINGS + 1:  # a circle too big for everyone to link with everyone
        assert all(len(others) < len(up) - 1 for others in graph.values())


@settings(max_examples=100, deadline=None)
@given(KEYS, st.data())
def test_members_that_wrongly_believe_others_down_still_connect_them(
    members: list[bytes], data: st.DataObject
) -> None:
    # Each member knows every member that is down, and may also wrongly believe some up
    # members down (a dial that failed once too often), as long as two members do not
    # each believe the other down.
    offline = set(data.draw(st.sets(st.sampled_from(members), max_size=len(members) - 1)))
    up = set(members) - offline
    suspects = {
        m: set(data.draw(st.sets(st.sampled_from(sorted(up)), max_size=3))) - {m} for m in up
    }
    for m in up:
        for other in list(suspects[m]):
            if m in suspects.get(other, set()):
                suspects[m].discard(other)
    graph = links(members, lambda m: offline | suspects[m], up)
    assert connected(graph)


@given(KEYS)
def test_every_member_computes_the_same_rings_whatever_the_order_of_the_list(
    members: list[bytes],
) -> None:
    assert ring_order(0, members) == ring_order(0, list(reversed(members)))
    me = members[0]
    assert neighbours(members, me) == neighbours(list(reversed(members)), me)
    # A link either end wants, the other end wants too (when both see the same members up).
    for other in neighbours(members, me):
        assert me in neighbours(members, other)


def test_a_member_alone_or_outside_links_with_no_one() -> None:
    a, b = bytes(32), bytes([1]) * 32
    assert neighbours([a], a) == frozenset()
    assert neighbours([a, b], bytes([2]) * 32) == frozenset()
    assert neighbours([a, b], a) == {b}
    assert neighbours([a, b], a, down={b}) == frozenset()
