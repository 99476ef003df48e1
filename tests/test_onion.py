"""Onion addresses, keys, SOCKS5 replies and the dial backoff (core/onion.py)."""

from __future__ import annotations

import base64
import hashlib

import nacl.bindings
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pmoments.core.errors import DecodeError
from p2pmoments.core.onion import (
    BACKOFF_MAX,
    ONION_PORT,
    ClientAuthKey,
    ClientAuthPublicKey,
    OnionAddress,
    OnionKey,
    SocksError,
    SocksReply,
    backoff_delay,
    is_onion_host,
    pairing_client_auth,
    socks_check_method,
    socks_check_reply,
    socks_connect_request,
    socks_reply_length,
    stalled_rend_circuits,
)

# The Tor Project's own onion address, as published.
TORPROJECT = "2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion"


def service_id(key: bytes, version: int = 3, checksum: bytes | None = None) -> str:
    """An onion address computed independently of core/onion.py (rend-spec-v3)."""
    v = bytes([version])
    if checksum is None:
        checksum = hashlib.sha3_256(b".onion checksum" + key + v).digest()[:2]
    return base64.b32encode(key + checksum + v).decode().lower() + ".onion"


def test_a_published_address_parses_and_prints_the_same() -> None:
    address = OnionAddress.parse(TORPROJECT)
    assert str(address) == TORPROJECT
    assert OnionAddress.parse(TORPROJECT.upper()) == address
    assert OnionAddress.parse(" " + TORPROJECT.removesuffix(".onion") + "\n") == address
    assert OnionAddress(bytes(address)) == address
    assert len({address, OnionAddress.parse(TORPROJECT)}) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "56 letters"),
        ("expyuzz4wqqyqhjn.onion", "v2"),
        (TORPROJECT.replace("2gzy", "3gzy"), "checksum"),
        (TORPROJECT[:-7] + "1.onion", "56 letters"),
        (TORPROJECT + "x", "too long"),
        (TORPROJECT.replace(".onion", ".com"), "56 letters"),
        (service_id(bytes(OnionAddress.parse(TORPROJECT)), version=4), "version 4"),
        # The identity point, of small order: tor refuses it, so do we.
        (service_id(b"\x01" + bytes(31)), "not a valid Ed25519 key"),
    ],
)
def test_bad_addresses_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        OnionAddress.parse(text)


@given(st.text(max_size=80))
def test_hostile_text_only_ever_raises_decode_error(text: str) -> None:
    try:
        address = OnionAddress.parse(text)
    except DecodeError:
        return
    assert OnionAddress.parse(str(address)) == address


@given(st.binary(min_size=35, max_size=35))
def test_random_35_bytes_parse_only_with_checksum_version_and_a_valid_key(raw: bytes) -> None:
    text = base64.b32encode(raw).decode() + ".onion"
    try:
        address = OnionAddress.parse(text)
    except DecodeError:
        return
    assert raw[34] == 3
    assert service_id(raw[:32]).upper() == text.upper()
    assert bytes(address) == raw[:32]


@given(st.binary(min_size=32, max_size=32))
def test_onion_key_address_matches_the_expanded_key_tor_is_given(seed: bytes) -> None:
    key = OnionKey(seed)
    assert str(key.address) == service_id(bytes(key.address))
    prefix, blob = key.tor_blob().split(":")
    expanded = base64.b64decode(blob)
    assert prefix == "ED25519-V3"
    assert len(expanded) == 64
    # Tor signs with the expanded key's scalar: its public point must be the address.
    scalar = expanded[:32]
    assert nacl.bindings.crypto_scalarmult_ed25519_base_noclamp(scalar) == bytes(key.address)


def test_secrets_never_show_in_a_repr() -> None:
    key = OnionKey.generate()
    auth = ClientAuthKey.generate()
    for text in (repr(key), repr(auth), repr(key.address), repr(auth.public_key)):
        assert key.seed.hex() not in text
        assert key.tor_blob().split(":")[1] not in text
        assert auth.tor_blob().split(":")[1] not in text
    # Nor the address itself: a repr may reach a log, the address goes to friends only.
    assert key.address.service_id not in repr(key)
    assert key.address.service_id not in repr(key.address)


def test_client_auth_keys_in_tor_formats() -> None:
    auth = ClientAuthKey(bytes(range(32)))
    public = nacl.bindings.crypto_scalarmult_base(bytes(range(32)))
    assert bytes(auth.public_key) == public
    assert auth.public_key.tor_text() == base64.b32encode(public).decode().rstrip("=")
    assert auth.tor_blob() == "x25519:" + base64.b64encode(bytes(range(32))).decode()
    assert ClientAuthPublicKey(public) == auth.public_key
    with pytest.raises(DecodeError):
        ClientAuthPublicKey(b"short")


def test_the_pairing_client_auth_key_follows_the_token() -> None:
    a, b = pairing_client_auth(bytes(16)), pairing_client_auth(bytes(16))
    assert a.public_key == b.public_key
    assert pairing_client_auth(b"\x01" * 16).public_key != a.public_key
    with pytest.raises(ValueError, match="16 bytes"):
        pairing_client_auth(b"short")


def test_socks_connect_request_names_the_onion_and_port() -> None:
    request = socks_connect_request(TORPROJECT, ONION_PORT)
    assert request == b"\x05\x01\x00\x03\x3e" + TORPROJECT.encode() + b"\xb9\x6e"
    with pytest.raises(ValueError, match="port"):
        socks_connect_request(TORPROJECT, 0)
    with pytest.raises(ValueError, match="255"):
        socks_connect_request("a" * 256, 1)
    socks_check_method(b"\x05\x00")
    with pytest.raises(SocksError, match="authentication"):
        socks_check_method(b"\x05\xff")
    with pytest.raises(SocksError, match="SOCKS5"):
        socks_check_method(b"HT")


def reply(code: int) -> bytes:
    return bytes([5, code, 0, 1]) + bytes(6)


def test_success_passes_and_each_failure_says_whether_to_retry() -> None:
    socks_check_reply(reply(0))
    retry = {
        SocksReply.ONION_DESCRIPTOR_NOT_FOUND,
        SocksReply.ONION_INTRO_FAILED,
        SocksReply.ONION_REND_FAILED,
        SocksReply.ONION_INTRO_TIMED_OUT,
        SocksReply.GENERAL_FAILURE,
        SocksReply.TTL_EXPIRED,
    }
    never = {
        SocksReply.ONION_MISSING_CLIENT_AUTH,
        SocksReply.ONION_BAD_CLIENT_AUTH,
        SocksReply.ONION_BAD_ADDRESS,
    }
    for code in SocksReply:
        if code is SocksReply.SUCCEEDED:
            continue
        with pytest.raises(SocksError) as caught:
            socks_check_reply(reply(code))
        assert caught.value.reply is code
        assert f"{code.value:#04x}" in str(caught.value)
        if code in retry:
            assert caught.value.retry, code
        if code in never:
            assert not caught.value.retry, code
    with pytest.raises(SocksError, match="client authorisation we do not have"):
        socks_check_reply(reply(0xF4))


def test_reply_lengths_for_each_address_type() -> None:
    assert socks_reply_length(bytes([5, 0, 0, 1, 0])) == 10
    assert socks_reply_length(bytes([5, 0, 0, 4, 0])) == 22
    assert socks_reply_length(bytes([5, 0, 0, 3, 7])) == 4 + 1 + 7 + 2


@given(st.binary(max_size=40))
def test_hostile_replies_only_ever_raise_socks_error(data: bytes) -> None:
    try:
        length = socks_reply_length(data[:5])
        socks_check_reply(data[:length])
    except SocksError:
        return


@given(st.integers(0, 1000), st.floats(0, 0.999))
def test_backoff_starts_at_a_second_doubles_and_stays_bounded(attempt: int, jitter: float) -> None:
    delay = backoff_delay(attempt, jitter)
    assert 0.8 <= delay <= BACKOFF_MAX * 1.2
    assert delay <= backoff_delay(attempt + 1, jitter)
    assert backoff_delay(0, 0.5) == 1.0
    assert backoff_delay(3, 0.5) == 8.0


def test_backoff_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="jitter"):
        backoff_delay(0, 1.0)
    with pytest.raises(ValueError, match="attempt"):
        backoff_delay(-1, 0.0)


def test_onion_hosts_are_told_from_others() -> None:
    assert is_onion_host(TORPROJECT)
    assert is_onion_host(TORPROJECT.upper() + ".")
    assert not is_onion_host("192.168.1.2")
    assert not is_onion_host("onion.example")


def test_stalled_rendezvous_circuits_are_found_and_joined_ones_kept() -> None:
    sid = OnionAddress.parse(TORPROJECT).service_id
    status = "\n".join(
        [
            f"7 BUILT $A~a,$B~b PURPOSE=HS_CLIENT_REND HS_STATE=HSCR_ESTABLISHED_WAITING "
            f"REND_QUERY={sid} TIME_CREATED=2026-11-29T00:28:56",
            f"8 BUILT $A~a PURPOSE=HS_CLIENT_REND HS_STATE=HSCR_JOINED REND_QUERY={sid}",
            f"9 BUILT $A~a PURPOSE=HS_CLIENT_INTRO HS_STATE=HSCI_INTRO_SENT REND_QUERY={sid}",
            "10 BUILT $A~a PURPOSE=HS_CLIENT_REND HS_STATE=HSCR_ESTABLISHED_IDLE "
            "REND_QUERY=" + "a" * 56,
            f"11 EXTENDED $A~a PURPOSE=HS_CLIENT_REND HS_STATE=HSCR_CONNECTING REND_QUERY={sid}",
            "garbage PURPOSE=HS_CLIENT_REND",
        ]
    )
    assert stalled_rend_circuits(status, sid) == ["7", "11"]
    assert stalled_rend_circuits("", sid) == []


@given(st.text(max_size=300))
def test_hostile_circuit_status_never_crashes(text: str) -> None:
    for circuit in stalled_rend_circuits(text, "x"):
        assert circuit.isdigit()


def test_a_friend_away_for_days_is_dialled_every_minute_and_never_crashes_the_dialler() -> None:
    """The dialler's backoff after 10,000 failed dials (a laptop off for a week): still
    about a minute, where the old exponent overflowed a float at 1,025."""
    from p2pmoments.net.links import Links, _Target

    class Clock:
        _clock = staticmethod(lambda: 1000.0)

    target = _Target(verify_key=b"v" * 32, link_key=b"k" * 32, failures=10_000)
    Links._backoff(Clock(), target)  # type: ignore[arg-type]
    assert 1000.0 + 0.8 * BACKOFF_MAX <= target.next_attempt <= 1000.0 + 1.2 * BACKOFF_MAX
    target.direct_failures = 10_000
    Links._backoff_direct(Clock(), target)  # type: ignore[arg-type]
    assert target.next_direct <= 1000.0 + 1.2 * 300.0
