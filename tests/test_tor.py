"""net/tor.py without a Tor network: missing tor, bad settings, the key file, and a
fake SOCKS port saying each thing tor can say."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from p2pmoments.core.onion import (
    OnionKey,
    SocksError,
    SocksReply,
    decode_tor_key_file,
    encode_tor_key_file,
    parse_bootstrap_phase,
)
from p2pmoments.net import tor as tor_module
from p2pmoments.net.tor import Tor, TorError, TorNotFoundError, load_or_create_tor_keys

ONION = OnionKey(bytes(32)).address
needs_tor = pytest.mark.skipif(shutil.which("tor") is None, reason="tor is not installed")


async def test_a_missing_tor_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(TorNotFoundError, match="apt install tor") as caught:
        await Tor.launch(tmp_path / "tor")
    assert "brew install tor" in str(caught.value)
    with pytest.raises(TorNotFoundError, match="no tor program at"):
        await Tor.launch(tmp_path / "tor", tor_path=tmp_path / "nothing-here")


async def test_a_torrc_line_cannot_smuggle_another(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="line break"):
        await Tor.launch(
            tmp_path / "tor", extra_lines=["Log notice stdout\nSocksPort 0.0.0.0:9050"]
        )


@needs_tor
async def test_tor_refusing_its_config_is_reported_with_its_words(tmp_path: Path) -> None:
    with pytest.raises(TorError, match="exited with status") as caught:
        await Tor.launch(tmp_path / "tor", extra_lines=["NoSuchTorOption 1"])
    assert "NoSuchTorOption" in str(caught.value)


async def test_attaching_to_nothing_says_so() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(TorError, match="cannot reach tor's control port"):
        await Tor.attach(f"127.0.0.1:{port}")
    with pytest.raises(ValueError, match="HOST:PORT"):
        await Tor.attach("localhost")


def test_the_key_file_is_made_once_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "data" / "tor.key"
    first = load_or_create_tor_keys(path)
    assert path.stat().st_mode & 0o777 == 0o600
    again = load_or_create_tor_keys(path)
    assert again.onion.address == first.onion.address
    assert again.client_auth.public_key == first.client_auth.public_key
    path.chmod(0o644)
    load_or_create_tor_keys(path)
    assert path.stat().st_mode & 0o777 == 0o600
    path.write_bytes(b"junk")
    with pytest.raises(TorError, match=r"tor\.key"):
        load_or_create_tor_keys(path)


def test_the_key_file_round_trips_and_refuses_junk(tmp_path: Path) -> None:
    keys = load_or_create_tor_keys(tmp_path / "k")
    back = decode_tor_key_file(encode_tor_key_file(keys))
    assert back.onion.seed == keys.onion.seed
    assert back.client_auth.secret_bytes == keys.client_auth.secret_bytes
    with pytest.raises(ValueError, match="version"):
        decode_tor_key_file(bytes.fromhex("a10102"))


def test_bootstrap_phases_are_read_from_tor_words() -> None:
    assert parse_bootstrap_phase('NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"') == (
        100,
        "Done",
    )
    assert parse_bootstrap_phase(
        'NOTICE BOOTSTRAP PROGRESS=45 TAG=requesting_descriptors SUMMARY="Asking for relay'
        ' descriptors" WARNING="a \\"quoted\\" word"'
    ) == (45, "Asking for relay descriptors")
    assert parse_bootstrap_phase("junk") == (0, "")
    assert parse_bootstrap_phase("PROGRESS=999") == (100, "")


class FakeController:
    """Just enough of stem's Controller for open_connection and dial."""

    def __init__(self, socks_port: int) -> None:
        self.socks_port = socks_port
        self.sent: list[str] = []

    def get_listeners(self, _kind: object) -> list[tuple[str, int]]:
        return [("127.0.0.1", self.socks_port)]

    def msg(self, command: str) -> object:
        self.sent.append(command if command.startswith("CLOSECIRCUIT") else command.split(" ")[0])

        class Ok:
            def content(self) -> list[tuple[str, str, str]]:
                return [("250", " ", "OK")]

        return Ok()

    def close(self) -> None:
        pass

    def is_alive(self) -> bool:
        return True

    def get_info(self, key: str) -> str:
        assert key == "circuit-status"
        return (
            f"5 BUILT $A~a PURPOSE=HS_CLIENT_REND HS_STATE=HSCR_ESTABLISHED_WAITING "
            f"REND_QUERY={ONION.service_id}\n"
            f"6 BUILT $A~a PURPOSE=HS_CLIENT_REND HS_STATE=HSCR_JOINED "
            f"REND_QUERY={ONION.service_id}"
        )


@pytest.fixture
async def fake_socks() -> AsyncIterator[tuple[int, list[int]]]:
    """A SOCKS5 port that answers each CONNECT with the next code in `codes`
    (then 0x00 and echo)."""
    codes: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            assert await reader.readexactly(3) == b"\x05\x01\x00"
            writer.write(b"\x05\x00")
            head = await reader.readexactly(5)
            await reader.readexactly(head[4] + 2)
            code = codes.pop(0) if codes else 0
            writer.write(bytes([5, code, 0, 1, 0, 0, 0, 0, 0, 0]))
            while code == 0 and (data := await reader.read(1024)):
                writer.write(data)
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1], codes


async def test_dial_retries_while_the_descriptor_is_not_there_yet(
    fake_socks: tuple[int, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, codes = fake_socks
    monkeypatch.setattr(tor_module, "backoff_delay", lambda attempt, jitter: 0.01)
    tor = Tor(FakeController(port), proc=None)
    codes += [0xF0, 0xF0, 0xF2]
    reader, writer = await tor.dial(ONION, timeout=10)
    writer.write(b"ping")
    assert await reader.readexactly(4) == b"ping"
    writer.close()
    assert codes == []


async def test_dial_gives_up_at_once_on_a_bad_address_and_at_its_deadline(
    fake_socks: tuple[int, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, codes = fake_socks
    tor = Tor(FakeController(port), proc=None)
    codes += [0xF6, 0xF6]
    with pytest.raises(SocksError, match="invalid") as caught:
        await tor.dial(ONION, timeout=10)
    assert caught.value.reply is SocksReply.ONION_BAD_ADDRESS
    assert codes == [0xF6]
    codes[:] = [0xF0] * 10
    monkeypatch.setattr(tor_module, "backoff_delay", lambda attempt, jitter: 0.3)
    with pytest.raises(SocksError, match="not published"):
        await tor.dial(ONION, timeout=1)


async def test_dial_refetches_the_descriptor_on_client_auth_errors_then_says_why(
    fake_socks: tuple[int, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, codes = fake_socks
    monkeypatch.setattr(tor_module, "backoff_delay", lambda attempt, jitter: 0.01)
    monkeypatch.setattr(tor_module, "REFETCH_TIMEOUT", 0.05)
    controller = FakeController(port)
    tor = Tor(controller, proc=None)
    codes += [0xF5] * 10
    with pytest.raises(SocksError, match="does not accept our client authorisation"):
        await tor.dial(ONION, timeout=10)
    assert controller.sent == ["HSFETCH"] * tor_module.AUTH_REFETCHES
    assert tor.status().running
    await tor.close()
    await tor.close()
    assert not tor.status().running


async def test_a_port_that_is_not_socks_is_named(tmp_path: Path) -> None:
    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.0 400 Bad\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(http, "127.0.0.1", 0)
    async with server:
        tor = Tor(FakeController(server.sockets[0].getsockname()[1]), proc=None)
        with pytest.raises(SocksError, match="SOCKS5"):
            await tor.open_connection(ONION)


def test_no_secret_file_is_left_group_readable(tmp_path: Path) -> None:
    load_or_create_tor_keys(tmp_path / "d" / "tor.key")
    assert (tmp_path / "d").stat().st_mode & 0o077 == 0
    assert os.stat(tmp_path / "d" / "tor.key").st_mode & 0o077 == 0


async def test_a_connect_tor_never_answers_closes_its_waiting_circuits_and_tries_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An introduction that reached a service instance as it stopped leaves tor
    waiting on its rendezvous circuit for the whole SocksTimeout (seen on the private
    network): dial gives up on the attempt, closes that circuit, and tries again."""
    attempts = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal attempts
        attempts += 1
        await reader.readexactly(3)
        writer.write(b"\x05\x00")
        head = await reader.readexactly(5)
        await reader.readexactly(head[4] + 2)
        if attempts == 1:
            await reader.read()  # no answer until we hang up
        else:
            writer.write(bytes([5, 0, 0, 1, 0, 0, 0, 0, 0, 0]))
        writer.close()

    monkeypatch.setattr(tor_module, "CONNECT_TIMEOUT", 0.2)
    monkeypatch.setattr(tor_module, "backoff_delay", lambda attempt, jitter: 0.01)
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        controller = FakeController(server.sockets[0].getsockname()[1])
        tor = Tor(controller, proc=None)
        _, writer = await tor.dial(ONION, timeout=10)
        writer.close()
    assert attempts == 2
    assert controller.sent == ["CLOSECIRCUIT 5"]
