"""Admission decisions in the pure core: who gets an answer, who makes room, which link stays."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pmoments.core.admission import (
    Claim,
    Client,
    Half,
    Known,
    Verdict,
    admit,
    control_room,
    keep_new_link,
    make_room,
    stream_room,
)


@pytest.mark.parametrize(
    ("known", "verdict", "reason"),
    [
        (Known(friend=True), Verdict.ACCEPT, ""),
        (Known(co_member=True), Verdict.ACCEPT, ""),
        (Known(), Verdict.REFUSE, ""),
        (Known(blocked=True), Verdict.REFUSE, ""),
        (Known(friend=True, cooling=True), Verdict.REFUSE, ""),
        (Known(claim=Claim.OK), Verdict.ACCEPT, ""),
        (Known(claim=Claim.OK, blocked=True), Verdict.ACCEPT, ""),  # re-pairing unblocks
        (Known(claim=Claim.USED), Verdict.REFUSE_PAIRING, "already used by another device"),
        (Known(claim=Claim.EXPIRED), Verdict.REFUSE_PAIRING, "expired"),
        (Known(claim=Claim.OK, friends=3, max_friends=3), Verdict.REFUSE_PAIRING, "limit (3)"),
        (Known(claim=Claim.OK, friend=True, friends=3, max_friends=3), Verdict.ACCEPT, ""),
    ],
)
def test_who_gets_an_answer(known: Known, verdict: Verdict, reason: str) -> None:
    admission = admit(known)
    assert admission.verdict is verdict
    assert reason in admission.reason


def half(n: int, host: str = "h", *, idle: bool = True) -> Half[int]:
    return Half(conn=n, host=host, opened=float(n), awaiting_first_message=idle)


def room(handshakes: list[Half[int]], host: str = "new") -> tuple[bool, list[int]]:
    return make_room(handshakes, host, links=0, max_links=256, max_handshakes=4, max_per_host=2)


def test_below_the_bounds_nothing_is_evicted() -> None:
    assert room([half(1, "a"), half(2, "b")]) == (True, [])


def test_at_the_bound_the_oldest_idle_connection_makes_room() -> None:
    busy = [half(1, "a", idle=False), half(2, "b"), half(3, "c"), half(4, "d")]
    assert room(busy) == (True, [2])


def test_a_host_at_its_own_bound_loses_its_oldest_idle_one() -> None:
    assert room([half(1, "a"), half(2, "a")], "a") == (True, [1])


def test_when_every_one_in_the_way_has_proved_something_the_new_one_waits() -> None:
    busy = [half(i, h, idle=False) for i, h in enumerate("abcd")]
    assert room(busy) == (False, [])


@given(
    st.lists(st.tuples(st.sampled_from("abc"), st.booleans()), max_size=4), st.sampled_from("abc")
)
def test_after_making_room_the_bounds_hold(entries: list[tuple[str, bool]], host: str) -> None:
    handshakes = [half(i, h, idle=idle) for i, (h, idle) in enumerate(entries)]
    if any(sum(1 for h in handshakes if h.host == x) > 2 for x in "abc"):
        return  # not a state the bounds allow
    ok, evicted = room(handshakes, host)
    left = [h for h in handshakes if h.conn not in evicted]
    assert all(h.awaiting_first_message for h in handshakes if h.conn in evicted)
    if ok:  # with the new connection added, both bounds still hold
        assert len(left) + 1 <= 4
        assert sum(1 for h in left if h.host == host) + 1 <= 2
    else:
        assert evicted == []
        assert all(not h.awaiting_first_message for h in handshakes if h.host == host) or all(
            not h.awaiting_first_message for h in handshakes
        )


@given(
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=32, max_size=32),
    st.booleans(),
    st.booleans(),
)
def test_both_sides_keep_the_same_link(
    me: bytes, peer: bytes, old_mine: bool, new_mine: bool
) -> None:
    if me == peer or old_mine == new_mine:
        return
    mine = keep_new_link(me, peer, old_dialled_by_us=old_mine, new_dialled_by_us=new_mine)
    theirs = keep_new_link(peer, me, old_dialled_by_us=not old_mine, new_dialled_by_us=not new_mine)
    assert mine == theirs


def test_a_redial_by_the_same_side_replaces_the_old_link() -> None:
    assert keep_new_link(b"a", b"b", old_dialled_by_us=True, new_dialled_by_us=True)
    assert keep_new_link(b"a", b"b", old_dialled_by_us=False, new_dialled_by_us=False)


@given(
    me=st.binary(min_size=32, max_size=32),
    peer=st.binary(min_size=32, max_size=32),
    old_mine=st.booleans(),
    new_mine=st.booleans(),
    old_tor=st.booleans(),
)
def test_a_direct_link_beats_one_over_tor_and_both_sides_agree(
    me: bytes, peer: bytes, old_mine: bool, new_mine: bool, old_tor: bool
) -> None:
    new_tor = not old_tor
    mine = keep_new_link(
        me,
        peer,
        old_dialled_by_us=old_mine,
        new_dialled_by_us=new_mine,
        old_over_tor=old_tor,
        new_over_tor=new_tor,
    )
    theirs = keep_new_link(
        peer,
        me,
        old_dialled_by_us=not old_mine,
        new_dialled_by_us=not new_mine,
        old_over_tor=old_tor,
        new_over_tor=new_tor,
    )
    assert mine == theirs == old_tor  # the LAN link stays, whoever dialled it


def client(n: int, host: str = "127.0.0.1", *, busy: bool = False) -> Client[int]:
    return Client(conn=n, host=host, idle_since=float(n), busy=busy)


def control(conns: list[Client[int]], host: str = "127.0.0.1") -> tuple[bool, list[int]]:
    return control_room(conns, host, max_conns=4, max_per_host=3)


def test_the_control_port_takes_a_connection_below_its_bounds() -> None:
    assert control([client(1), client(2, "127.0.0.2")]) == (True, [])


def test_a_slow_client_makes_room_for_the_next_one() -> None:
    """The one idle longest goes, not one being answered, however old."""
    conns = [client(1, busy=True), client(2), client(3)]
    assert control(conns) == (True, [2])
    conns = [client(1, "a", busy=True), client(2, "b"), client(3, "c"), client(4, "d")]
    assert control(conns) == (True, [2])


def test_a_connection_not_yet_read_from_is_the_last_to_make_room() -> None:
    """In a burst, a client's whole request may be waiting unread behind the flood's."""
    unread = Client(conn=1, host="127.0.0.1", idle_since=1.0, busy=False, heard=False)
    assert control([unread, client(2), client(3)]) == (True, [2])
    assert control([unread, client(2, busy=True), client(3, busy=True)]) == (True, [1])


def test_a_connection_not_yet_read_from_is_kept_in_its_first_second() -> None:
    """Accepted in the same burst as a flood, it may hold a whole request unread: it
    does not make room until its grace is over (then it does, or a flood of silent
    connections would hold every slot)."""
    unread = Client(conn=1, host="127.0.0.1", idle_since=1.0, busy=False, heard=False, opened=9)
    busy = [client(2, busy=True), client(3, busy=True)]
    young = control_room(
        [unread, *busy], "127.0.0.1", max_conns=4, max_per_host=3, now=9.5, grace=1
    )
    assert young == (False, [])
    old = control_room([unread, *busy], "127.0.0.1", max_conns=4, max_per_host=3, now=10, grace=1)
    assert old == (True, [1])


def test_one_address_cannot_take_every_connection() -> None:
    conns = [client(1, "a"), client(2, "b", busy=True), client(3, "b"), client(4, "b")]
    assert control(conns, "b") == (True, [3])  # b's own, though a's is older


def test_when_every_connection_is_at_work_a_new_one_is_refused() -> None:
    assert control([client(i, "abcd"[i], busy=True) for i in range(4)]) == (False, [])


@given(
    st.lists(st.tuples(st.sampled_from("abc"), st.booleans()), max_size=4), st.sampled_from("abc")
)
def test_on_the_control_port_the_bounds_hold_after_making_room(
    entries: list[tuple[str, bool]], host: str
) -> None:
    conns = [client(i, h, busy=busy) for i, (h, busy) in enumerate(entries)]
    if any(sum(1 for c in conns if c.host == x) > 3 for x in "abc"):
        return  # not a state the bounds allow
    ok, evicted = control(conns, host)
    left = [c for c in conns if c.conn not in evicted]
    assert all(not c.busy for c in conns if c.conn in evicted)
    if ok:
        assert len(left) + 1 <= 4
        assert sum(1 for c in left if c.host == host) + 1 <= 3
    else:
        assert not evicted
        assert all(c.busy for c in conns if c.host == host) or all(c.busy for c in conns)


def streams(holders: str, session: str) -> tuple[bool, int | None]:
    return stream_room(list(holders), session, max_streams=6, max_per_session=3)


def test_event_streams_are_bounded_per_session() -> None:
    assert streams("", "a") == (True, None)
    assert streams("ab", "a") == (True, None)
    assert streams("aab", "a") == (True, None)
    assert streams("aaab", "a") == (False, None)  # a is at its own bound
    assert streams("aaab", "b") == (True, None)


def test_when_all_are_taken_the_biggest_holder_makes_room() -> None:
    assert streams("abcaab", "c") == (True, 0)  # a's oldest: a holds 3, c would hold 2
    assert streams("bbaaac", "c") == (True, 2)
    assert streams("aabbcc", "d") == (True, 0)  # a tie: the oldest stream goes
    assert streams("aabbcc", "c") == (False, None)  # as many as any other: wait
    assert streams("aabbcc", "a") == (False, None)


@given(st.lists(st.sampled_from("abcd"), max_size=6), st.sampled_from("abcd"))
def test_a_session_never_loses_a_stream_to_one_holding_as_many(
    holders: list[str], session: str
) -> None:
    if any(holders.count(x) > 3 for x in "abcd"):
        return  # not a state the bounds allow
    ok, end = stream_room(holders, session, max_streams=6, max_per_session=3)
    left = list(holders)
    if end is not None:
        assert ok
        victim = left.pop(end)
        assert victim != session
        assert holders.count(victim) > holders.count(session) + 1
    if ok:
        assert len(left) + 1 <= 6
        assert left.count(session) + 1 <= 3
