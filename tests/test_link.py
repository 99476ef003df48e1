"""The link state machine in memory: pairs, hellos, keepalive, and hostile bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pmoments.core import wire
from p2pmoments.core.errors import LocalProtocolError
from p2pmoments.core.identity import Identity
from p2pmoments.core.link import (
    DEAD_AFTER,
    FIRST_MESSAGE_TIMEOUT,
    HANDSHAKE_TIMEOUT,
    KEEPALIVE_INTERVAL,
    MAX_APP_MESSAGE,
    MODE_IK,
    PROLOGUE,
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
    """A dialler waiting for message 2 gives up after HANDSHAKE_TIMEOUT; so does a
    responder that read message 1 but never got a hello."""
    pair = Pair()
    assert pair.a.tick(HANDSHAKE_TIMEOUT - 1) == []
    (closed,) = pair.a.tick(HANDSHAKE_TIMEOUT)
    assert closed.code is CloseCode.TIMEOUT
    pair = Pair()
    pair.b.receive_data(pair.a.data_to_send(), 0.0)
    pair.b.accept()
    assert pair.b.tick(HANDSHAKE_TIMEOUT - 1) == []
    (closed,) = pair.b.tick(HANDSHAKE_TIMEOUT)
    assert closed.code is CloseCode.TIMEOUT


def test_a_connection_that_never_sends_message_1_is_dropped_sooner_and_silently() -> None:
    pair = Pair()
    assert pair.b.awaiting_first_message
    assert pair.b.next_deadline() == FIRST_MESSAGE_TIMEOUT
    assert pair.b.tick(FIRST_MESSAGE_TIMEOUT - 0.1) == []
    (closed,) = pair.b.tick(FIRST_MESSAGE_TIMEOUT)
    assert closed.code is CloseCode.TIMEOUT
    assert pair.b.data_to_send() == b""
    pair = Pair()
    pair.b.receive_data(pair.a.data_to_send()[:50], 0.0)  # half a message 1 is not one
    assert pair.b.awaiting_first_message
    pair.b.receive_data(pair.a.data_to_send(), 0.0)


@pytest.mark.parametrize(
    ("setup", "code"),
    [
        ("ping before hello", CloseCode.PROTOCOL_ERROR),
        ("unknown type", CloseCode.PROTOCOL_ERROR),
        ("bad cbor", CloseCode.PROTOCOL_ERROR),
        ("too large", CloseCode.TOO_LARGE),
        ("dead", CloseCode.TIMEOUT),
        ("hello timeout", CloseCode.TIMEOUT),
    ],
)
def test_errors_after_the_handshake_end_with_a_close_carrying_the_code(
    setup: str, code: CloseCode
) -> None:
    """spec/transport.md section 6: once the handshake is done, the side that ends a link
    says why; the other side reads the code instead of a bare end of stream."""
    pair = Pair()
    if setup in ("ping before hello", "hello timeout"):
        pair.b.receive_data(pair.a.data_to_send(), 0.0)
        pair.b.accept()
        pair.a.receive_data(pair.b.data_to_send(), 0.0)
        pair.a.data_to_send()  # A's hello, never delivered
        if setup == "hello timeout":
            pair.b.tick(HANDSHAKE_TIMEOUT)
        else:
            assert pair.a._send is not None
            message = wire.encode_map({0: 2})
            plain = len(message).to_bytes(4, "big") + message
            frame = pair.a._send.encrypt_with_ad(b"", plain)
            pair.b.receive_data(len(frame).to_bytes(2, "big") + frame, 0.0)
    else:
        pair.pump()
        assert pair.a._send is not None
        if setup == "dead":
            pair.b.tick(DEAD_AFTER)
        else:
            plain = {
                "unknown type": _message({0: 7}),
                "bad cbor": b"\x00\x00\x00\x02\xff\xff",
                "too large": (MAX_APP_MESSAGE + 1).to_bytes(4, "big"),
            }[setup]
            frame = pair.a._send.encrypt_with_ad(b"", plain)
            pair.b.receive_data(len(frame).to_bytes(2, "big") + frame, 1.0)
    assert pair.b.state is LinkState.CLOSED
    said = pair.b.data_to_send()
    assert said, "the link ended with a bare end of stream"
    events = pair.a.receive_data(said, 1.0)
    closed = [e for e in events if isinstance(e, Closed)]
    assert closed
    assert (closed[-1].code, closed[-1].by_peer) == (code, True)


def _message(body: dict[int, object]) -> bytes:
    data = wire.encode_map(body)
    return len(data).to_bytes(4, "big") + data


@pytest.mark.parametrize("payload", [b"x", b"\x00" * 64])
def test_message_1_with_a_payload_is_refused_in_silence(payload: bytes) -> None:
    from p2pmoments.core.noise import HandshakeState, Pattern

    hs = HandshakeState(
        Pattern.IK,
        initiator=True,
        prologue=PROLOGUE + bytes([MODE_IK]),
        static=ALICE.link_secret,
        remote_static=bytes(BOB.public.link_key),
    )
    body = bytes([MODE_IK]) + hs.write_message(payload)
    responder = Link(identity=BOB, name="Bob", initiator=False, now=0.0)
    events = responder.receive_data(len(body).to_bytes(2, "big") + body, 0.0)
    assert responder.state is LinkState.CLOSED
    assert not any(isinstance(e, AcceptRequest) for e in events)
    assert responder.data_to_send() == b""


def test_a_scanner_holding_a_used_code_is_told_so_and_nobody_else_is() -> None:
    pair = Pair(token=TOKEN, tokens=(TOKEN,))
    (request,) = pair.b.receive_data(pair.a.data_to_send(), 0.0)
    assert isinstance(request, AcceptRequest)
    assert request.pairing_token == TOKEN
    pair.b.refuse_pairing("this code was already used by another device")
    events = pair.a.receive_data(pair.b.data_to_send(), 1.0)
    (closed,) = [e for e in events if isinstance(e, Closed)]
    assert closed.code is CloseCode.PAIRING_REFUSED
    assert closed.reason == "this code was already used by another device"
    assert not any(isinstance(e, Established) for e in events)
    # A friend's plain IK handshake cannot be answered that way: it proved no code.
    plain = Pair()
    plain.b.receive_data(plain.a.data_to_send(), 0.0)
    with pytest.raises(LocalProtocolError):
        plain.b.refuse_pairing("no")


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
