"""The Noise core under hostile input: in-memory pairs, tampering, wrong keys and PSKs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pmoments.core.crypto import LinkSecretKey
from p2pmoments.core.errors import LocalProtocolError
from p2pmoments.core.noise import HandshakeState, NoiseError, Pattern

PROLOGUE = b"p2pmoments/1"
ALICE, BOB, EVE = (LinkSecretKey(bytes([i]) * 32) for i in (1, 2, 3))
TOKEN = bytes(range(32))

# Low-order points of Curve25519 (RFC 7748 section 7; libsodium rejects them).
LOW_ORDER = [
    bytes(32),
    b"\x01" + bytes(31),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
]


def pair(
    pattern: Pattern = Pattern.IK, psk: bytes | None = None
) -> tuple[HandshakeState, HandshakeState]:
    psks = [psk] if psk else []
    initiator = HandshakeState(
        pattern,
        initiator=True,
        prologue=PROLOGUE,
        static=ALICE,
        remote_static=bytes(BOB.public_key),
        psks=psks,
    )
    responder = HandshakeState(pattern, initiator=False, prologue=PROLOGUE, static=BOB)
    return initiator, responder


def test_ik_round_trip_reveals_the_initiator_to_the_responder() -> None:
    initiator, responder = pair()
    assert responder.read_message(initiator.write_message(b"")) == b""
    assert responder.remote_static == bytes(ALICE.public_key)
    assert initiator.read_message(responder.write_message(b"hi")) == b"hi"
    a_send, a_recv = initiator.split()
    b_send, b_recv = responder.split()
    assert b_recv.decrypt_with_ad(b"", a_send.encrypt_with_ad(b"", b"x" * 1000)) == b"x" * 1000
    assert a_recv.decrypt_with_ad(b"", b_send.encrypt_with_ad(b"", b"y")) == b"y"
    assert initiator.handshake_hash == responder.handshake_hash


def test_a_different_prologue_fails_the_first_message() -> None:
    initiator = HandshakeState(
        Pattern.IK,
        initiator=True,
        prologue=b"other/1",
        static=ALICE,
        remote_static=bytes(BOB.public_key),
    )
    _, responder = pair()
    with pytest.raises(NoiseError):
        responder.read_message(initiator.write_message(b""))


def test_a_stranger_who_does_not_know_our_key_cannot_even_be_read() -> None:
    stranger = HandshakeState(
        Pattern.IK,
        initiator=True,
        prologue=PROLOGUE,
        static=ALICE,
        remote_static=bytes(EVE.public_key),
    )
    _, responder = pair()
    with pytest.raises(NoiseError):
        responder.read_message(stranger.write_message(b""))
    assert responder.remote_static is None


def test_ikpsk1_accepts_the_right_token_among_several() -> None:
    initiator, _ = pair(Pattern.IKpsk1, psk=TOKEN)
    responder = HandshakeState(Pattern.IKpsk1, initiator=False, prologue=PROLOGUE, static=BOB)
    others = [bytes([9]) * 32, bytes([8]) * 32]
    responder.read_message(initiator.write_message(b""), psk_candidates=[*others, TOKEN])
    assert responder.used_psk == TOKEN
    assert initiator.read_message(responder.write_message(b"")) == b""


def test_ikpsk1_refuses_a_wrong_or_missing_token_before_answering() -> None:
    initiator, _ = pair(Pattern.IKpsk1, psk=bytes([7]) * 32)
    responder = HandshakeState(Pattern.IKpsk1, initiator=False, prologue=PROLOGUE, static=BOB)
    with pytest.raises(NoiseError, match="pairing token"):
        responder.read_message(initiator.write_message(b""), psk_candidates=[TOKEN])
    with pytest.raises(LocalProtocolError):
        responder.write_message(b"")  # a failed handshake cannot answer


@pytest.mark.parametrize("point", LOW_ORDER)
def test_low_order_ephemeral_keys_are_refused(point: bytes) -> None:
    initiator, responder = pair()
    message = bytearray(initiator.write_message(b""))
    message[:32] = point
    with pytest.raises(NoiseError):
        responder.read_message(bytes(message))


@settings(max_examples=300)
@given(data=st.data())
def test_any_tampered_handshake_message_is_refused(data: st.DataObject) -> None:
    initiator, responder = pair()
    message = bytearray(initiator.write_message(b"payload"))
    pos = data.draw(st.integers(0, len(message) - 1))
    message[pos] ^= data.draw(st.integers(1, 255))
    with pytest.raises(NoiseError):
        responder.read_message(bytes(message))


@settings(max_examples=300)
@given(garbage=st.binary(max_size=200))
def test_garbage_first_messages_are_refused_never_crash(garbage: bytes) -> None:
    _, responder = pair()
    with pytest.raises(NoiseError):
        responder.read_message(garbage)


@given(cut=st.integers(0, 95))
def test_truncated_messages_are_refused(cut: int) -> None:
    initiator, responder = pair()
    message = initiator.write_message(b"")
    with pytest.raises(NoiseError):
        responder.read_message(message[:cut])


def test_a_replayed_first_message_cannot_complete_a_session() -> None:
    """A replayed message 1 gets an answer only the real initiator's ephemeral key can open."""
    initiator, responder = pair()
    first = initiator.write_message(b"")
    responder.read_message(first)
    responder.write_message(b"")
    _, replay_responder = pair()
    replay_responder.read_message(first)  # IK message 1 is replayable by design (spec/transport.md)
    answer = replay_responder.write_message(b"")
    # The attacker replaying has no ephemeral secret; a fresh initiator cannot read the answer.
    attacker, _ = pair()
    attacker.write_message(b"")
    with pytest.raises(NoiseError):
        attacker.read_message(answer)


def test_transport_replay_and_reorder_are_refused() -> None:
    initiator, responder = pair()
    responder.read_message(initiator.write_message(b""))
    initiator.read_message(responder.write_message(b""))
    send, _ = initiator.split()
    _, recv = responder.split()
    one, two = send.encrypt_with_ad(b"", b"1"), send.encrypt_with_ad(b"", b"2")
    with pytest.raises(NoiseError):
        recv.decrypt_with_ad(b"", two)  # out of order
    assert recv.decrypt_with_ad(b"", one) == b"1"  # a failure does not advance the nonce
    with pytest.raises(NoiseError):
        recv.decrypt_with_ad(b"", one)  # replayed


def test_misuse_is_a_local_error() -> None:
    initiator, responder = pair()
    with pytest.raises(LocalProtocolError):
        responder.write_message(b"")  # not its turn
    with pytest.raises(LocalProtocolError):
        initiator.split()  # not complete
    with pytest.raises(LocalProtocolError):
        HandshakeState(Pattern.IK, initiator=True, prologue=b"", static=ALICE)  # no remote key


def test_repr_shows_no_secrets() -> None:
    initiator, _ = pair()
    initiator.write_message(b"")
    text = repr(initiator) + repr(ALICE)
    assert ALICE.secret_bytes.hex()[:16] not in text
