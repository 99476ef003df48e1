"""The link state machine in memory: pairs, hellos, keepalive, and hostile bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pmoments.core.errors import LocalProtocolError
from p2pmoments.core.identity import Identity
from p2pmoments.core.link import (
    DEAD_AFTER,
    HANDSHAKE_TIMEOUT,
    KEEPALIVE_INTERVAL,
    MAX_APP_MESSAGE,
    AcceptRequest,
    CloseCode,
    Closed,
    Established,
    Link,
    LinkState,
    MessageReceived,
)

ALICE, BOB, MALLORY = Identity.generate(), Identity.generate(), Identity.generate()
TOKEN = bytes(range(32))


class Pair:
    """Two links wired back to back in memory, as h11's ConnectionPair."""

    def __init__(
        self,
        *,
        token: bytes | None = None,
        tokens: tuple[bytes, ...] = (),
        dialler: Identity = ALICE,
        expected: Identity | None = BOB,
    ) -> None:
        self.now = 0.0
        self.a = Link(
            identity=dialler,
            name="Alice",
            initiator=True,
            now=0.0,
            remote_link_key=bytes(BOB.public.link_key),
            expected_peer=expected.public.verify_key if expected else None,
            pairing_token=token,
        )
        self.b = Link(identity=BOB, name="Bob", initiator=False, now=0.0, pairing_tokens=tokens)
        self.events: dict[str, list[object]] = {"a": [], "b": []}

    def pump(self, accept: bool = True, rounds: int = 10) -> None:
        for _ in range(rounds):
            moved = False
            for src, dst, key in ((self.a, self.b, "b"), (self.b, self.a, "a")):
                data = src.data_to_send()
                if data:
                    moved = True
                    for event in dst.receive_data(data, self.now):
                        self.events[key].append(event)
                        if isinstance(event, AcceptRequest):
                            dst.accept() if accept else dst.refuse()
            if not moved:
                return

    def of(self, side: str, kind: type) -> list[object]:
        return [e for e in self.events[side] if isinstance(e, kind)]


def test_friends_link_up_and_learn_who_is_who() -> None:
    pair = Pair()
    pair.pump()
    assert pair.a.state is pair.b.state is LinkState.OPEN
    (a_est,) = pair.of("a", Established)
    (b_est,) = pair.of("b", Established)
    assert a_est.peer == BOB.public
    assert a_est.name == "Bob"
    assert b_est.peer == ALICE.public
    assert b_est.name == "Alice"
    assert a_est.handshake_hash == b_est.handshake_hash
    (request,) = pair.of("b", AcceptRequest)
    assert request.link_key == bytes(ALICE.public.link_key)
    assert request.pairing_token is None


def test_application_messages_flow_both_ways_including_large_ones() -> None:
    pair = Pair()
    pair.pump()
    big = b"x" * (MAX_APP_MESSAGE - 100)
    pair.a.send({0: 20, 1: big})
    pair.b.send({0: 21, 1: "hi"})
    pair.pump(rounds=50)
    assert [e.body for e in pair.of("b", MessageReceived)] == [{0: 20, 1: big}]
    assert [e.body for e in pair.of("a", MessageReceived)] == [{0: 21, 1: "hi"}]


def test_a_refused_initiator_gets_not_one_byte() -> None:
    pair = Pair()
    pair.b.receive_data(pair.a.data_to_send(), 0.0)
    pair.b.refuse()
    assert pair.b.data_to_send() == b""
    assert pair.b.state is LinkState.CLOSED


def test_pairing_with_the_right_token() -> None:
    pair = Pair(token=TOKEN, tokens=(bytes(32), TOKEN))
    pair.pump()
    assert pair.a.state is LinkState.OPEN
    (request,) = pair.of("b", AcceptRequest)
    assert request.pairing_token == TOKEN


@pytest.mark.parametrize("tokens", [(), (bytes(32),)])
def test_pairing_with_a_wrong_or_no_token_gets_no_answer(tokens: tuple[bytes, ...]) -> None:
    pair = Pair(token=TOKEN, tokens=tokens)
    events = pair.b.receive_data(pair.a.data_to_send(), 0.0)
    assert pair.b.data_to_send() == b""
    assert pair.b.state is LinkState.CLOSED
    assert isinstance(events[-1], Closed)


def test_a_responder_who_is_not_the_identity_we_dialled_is_dropped() -> None:
    """We dialled expecting Mallory's identity; Bob answers with his own: not who we meant."""
    pair = Pair(expected=MALLORY)
    pair.pump()
    closed = pair.of("a", Closed)
    assert closed
    assert closed[0].code is CloseCode.WRONG_IDENTITY
    assert not pair.of("a", Established)


def test_a_hello_whose_identity_does_not_vouch_for_the_link_key_is_refused() -> None:
    # Mallory dials with her own link key but claims to be Alice in her hello.
    forged = Identity(
        signing_key=ALICE.signing_key,
        link_secret=MALLORY.link_secret,
        link_signature=ALICE.link_signature,
    )
    pair = Pair(dialler=forged)
    pair.pump()
    closed = pair.of("b", Closed)
    assert closed[0].code is CloseCode.WRONG_IDENTITY
    assert not pair.of("b", Established)


def test_keepalive_and_dead_link_detection() -> None:
    pair = Pair()
    pair.pump()
    assert pair.a.next_deadline() == KEEPALIVE_INTERVAL
    pair.a.tick(KEEPALIVE_INTERVAL)
    assert pair.a.data_to_send()  # a ping
    events = pair.a.tick(DEAD_AFTER)
    assert events == [
        Closed(code=CloseCode.TIMEOUT, reason="no sign of life from the peer", by_peer=False)
    ]


def test_a_stalled_handshake_times_out() -> None:
    pair = Pair()
    assert pair.b.tick(HANDSHAKE_TIMEOUT - 1) == []
    (closed,) = pair.b.tick(HANDSHAKE_TIMEOUT)
    assert closed.code is CloseCode.TIMEOUT


def test_close_is_seen_by_the_peer_with_its_code() -> None:
    pair = Pair()
    pair.pump()
    pair.a.close(CloseCode.REPLACED, "duplicate link")
    pair.pump()
    (closed,) = pair.of("b", Closed)
    assert (closed.code, closed.reason, closed.by_peer) == (
        CloseCode.REPLACED,
        "duplicate link",
        True,
    )


def test_sending_before_open_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        Pair().a.send({0: 20})
    pair = Pair()
    pair.pump()
    with pytest.raises(LocalProtocolError):
        pair.a.send({0: 2})  # link-internal type


@settings(max_examples=200)
@given(garbage=st.binary(max_size=300))
def test_garbage_at_a_responder_closes_that_link_and_nothing_else(garbage: bytes) -> None:
    link = Link(identity=BOB, name="Bob", initiator=False, now=0.0)
    link.receive_data(garbage, 0.0)
    assert link.data_to_send() == b""  # a stranger never gets a byte back
    assert link.state in (LinkState.HANDSHAKE, LinkState.CLOSED)


@settings(max_examples=200)
@given(data=st.data())
def test_tampering_after_the_handshake_closes_the_link(data: st.DataObject) -> None:
    pair = Pair()
    pair.pump()
    pair.a.send({0: 20, 1: b"payload"})
    wire = bytearray(pair.a.data_to_send())
    pos = data.draw(st.integers(2, len(wire) - 1))
    wire[pos] ^= data.draw(st.integers(1, 255))
    events = pair.b.receive_data(bytes(wire), 1.0)
    assert not any(isinstance(e, MessageReceived) for e in events)


@settings(max_examples=100)
@given(chunks=st.lists(st.integers(1, 50), min_size=1, max_size=40))
def test_any_split_of_the_byte_stream_gives_the_same_result(chunks: list[int]) -> None:
    pair = Pair()
    pair.pump()
    pair.a.send({0: 20, 1: b"m" * 300})
    stream = pair.a.data_to_send()
    received = []
    pos = 0
    for size in chunks * 20:
        if pos >= len(stream):
            break
        received += pair.b.receive_data(stream[pos : pos + size], 1.0)
        pos += size
    received += pair.b.receive_data(stream[pos:], 1.0) if pos < len(stream) else []
    assert [e.body for e in received if isinstance(e, MessageReceived)] == [{0: 20, 1: b"m" * 300}]


def test_an_announced_oversized_message_closes_the_link_without_buffering() -> None:
    pair = Pair()
    pair.pump()
    # Craft a valid encrypted frame announcing a too-large message.
    assert pair.a._send is not None
    frame = pair.a._send.encrypt_with_ad(b"", (MAX_APP_MESSAGE + 1).to_bytes(4, "big"))
    events = pair.b.receive_data(len(frame).to_bytes(2, "big") + frame, 1.0)
    assert events[-1].code is CloseCode.TOO_LARGE
