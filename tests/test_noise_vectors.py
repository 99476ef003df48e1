"""Every vector in tests/vectors (cacophony and snow, two independent implementations).

Both sides are driven with the vector's keys, ephemerals, prologue and PSKs;
every handshake message, every transport message and, where given, the final
handshake hash must match byte for byte, in both directions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from p2pmoments.core.crypto import LinkSecretKey
from p2pmoments.core.noise import HandshakeState, Pattern

VECTORS = Path(__file__).parent / "vectors"
FILES = ("cacophony.txt", "snow.txt")


def load() -> list[Any]:
    cases = []
    for name in FILES:
        path = VECTORS / name
        if not path.exists():
            continue
        for vector in json.loads(path.read_text())["vectors"]:
            cases.append(pytest.param(vector, id=f"{name}:{vector['protocol_name']}"))
    return cases


CASES = load()


def test_the_vectors_are_present() -> None:
    """The vectors ship with the tests; without them these tests would silently vanish."""
    assert len(CASES) >= 11, f"expected the published vectors in {VECTORS}"
    names = {c.values[0]["protocol_name"] for c in CASES}
    assert "Noise_IK_25519_ChaChaPoly_BLAKE2b" in names
    assert "Noise_IKpsk1_25519_ChaChaPoly_BLAKE2b" in names


def side(vector: dict[str, Any], prefix: str, pattern: Pattern) -> HandshakeState:
    def key(field: str) -> LinkSecretKey | None:
        value = vector.get(f"{prefix}_{field}")
        return LinkSecretKey(bytes.fromhex(value)) if value else None

    remote = vector.get(f"{prefix}_remote_static")
    return HandshakeState(
        pattern,
        initiator=prefix == "init",
        prologue=bytes.fromhex(vector[f"{prefix}_prologue"]),
        static=key("static"),
        ephemeral=key("ephemeral"),
        remote_static=bytes.fromhex(remote) if remote else None,
        psks=[bytes.fromhex(p) for p in vector.get(f"{prefix}_psks", [])],
    )


@pytest.mark.parametrize("vector", CASES)
def test_vector(vector: dict[str, Any]) -> None:
    name = vector["protocol_name"]
    pattern = Pattern[name.split("_")[1]]
    initiator, responder = side(vector, "init", pattern), side(vector, "resp", pattern)
    messages = vector["messages"]
    n_handshake = len(pattern.messages)
    for i, message in enumerate(messages[:n_handshake]):
        writer, reader = (initiator, responder) if i % 2 == 0 else (responder, initiator)
        payload, expected = bytes.fromhex(message["payload"]), bytes.fromhex(message["ciphertext"])
        assert writer.write_message(payload) == expected, f"handshake message {i}"
        assert reader.read_message(expected) == payload
    assert initiator.is_complete
    assert responder.is_complete
    if "handshake_hash" in vector:
        assert initiator.handshake_hash.hex() == vector["handshake_hash"]
        assert responder.handshake_hash.hex() == vector["handshake_hash"]
    i_send, i_recv = initiator.split()
    r_send, r_recv = responder.split()
    for i, message in enumerate(messages[n_handshake:], start=n_handshake):
        # Direction alternates over the whole list, handshake included (vectors/README.md).
        send, recv = (i_send, r_recv) if i % 2 == 0 else (r_send, i_recv)
        payload, expected = bytes.fromhex(message["payload"]), bytes.fromhex(message["ciphertext"])
        assert send.encrypt_with_ad(b"", payload) == expected, f"transport message {i}"
        assert recv.decrypt_with_ad(b"", expected) == payload
