"""net/tor.py on a real private Tor network (tests/tornet.py): our own tor joins it,
publishes an onion service, and another tor reaches it through our SOCKS client.

Skipped with the reason where tor is not installed. Figures (time to reachable,
RTT, MB/s) are printed, never asserted: run with `-s -k figures` to see them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from p2pmoments.core.onion import ClientAuthKey, OnionAddress, SocksError, SocksReply
from p2pmoments.net.tor import Tor, TorStatus, load_or_create_tor_keys
from tests.tornet import TorNetwork, TorNode

pytestmark = [pytest.mark.tor, pytest.mark.timeout(600), pytest.mark.xdist_group("tor")]

REACH_TIMEOUT = 120.0


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """`E` + bytes: echo them; `S` + 8-byte length + bytes: swallow them, answer their SHA-256."""
    try:
        kind = await reader.readexactly(1)
        if kind == b"E":
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        elif kind == b"S":
            left = int.from_bytes(await reader.readexactly(8), "big")
            digest = hashlib.sha256()
            while left:
                data = await reader.read(min(left, 1 << 16))
                if not data:
                    return
                digest.update(data)
                left -= len(data)
            writer.write(digest.digest())
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    """A local TCP server (echo or sink) standing for the daemon's peer port."""
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


@pytest.fixture
def client_tor(tor_network: TorNetwork) -> TorNode:
    """A plain tor client of the network (not started by our code), bootstrapped."""
    node = tor_network.start_client(f"client{len(tor_network.clients)}")
    tor_network.wait_bootstrapped(node)
    return node


async def attach(node: TorNode) -> Tor:
    """Our code driving a tor someone else runs: the "system tor" case."""
    return await Tor.attach(f"127.0.0.1:{node.control_port}")


async def echo(tor: Tor, address: OnionAddress, payload: bytes) -> bytes:
    reader, writer = await tor.dial(address, timeout=REACH_TIMEOUT)
    try:
        writer.write(b"E" + payload)
        return await asyncio.wait_for(reader.readexactly(len(payload)), 60)
    finally:
        writer.close()


async def refusal(tor: Tor, address: OnionAddress) -> SocksError:
    """The first answer to a connect that trying again cannot change (a directory
    may not hold the descriptor yet: 0xF0 is tried again)."""
    deadline = time.monotonic() + REACH_TIMEOUT
    while True:
        try:
            _, writer = await tor.open_connection(address, timeout=60)
        except SocksError as exc:
            if not exc.retry or time.monotonic() > deadline:
                return exc
            await asyncio.sleep(1)
        else:
            writer.close()
            raise AssertionError(f"{address!r} let us in")


async def test_own_tor_publishes_an_onion_another_tor_reaches_by_socks(
    tor_network: TorNetwork, client_tor: TorNode, echo_port: int, tmp_path: Path
) -> None:
    keys = await asyncio.to_thread(load_or_create_tor_keys, tmp_path / "tor.key")
    seen: list[TorStatus] = []
    async with await attach(client_tor) as visitor:
        own = await Tor.launch(
            tmp_path / "tor", extra_lines=tor_network.torrc_lines(), on_change=seen.append
        )
        async with own:
            assert own.status().own
            assert own.pid is not None
            await own.wait_bootstrapped()
            address = await own.publish(keys.onion, echo_port)
            assert address == keys.onion.address
            assert own.status().onion == address
            assert await echo(visitor, address, b"hello over tor") == b"hello over tor"
            await own.wait_published()
            assert visitor.status().bootstrapped
            assert not visitor.status().own
            assert own.status().running
            pid = own.pid
        # The daemon heard tor come up and its service go out.
        assert any(s.bootstrapped for s in seen)
        assert seen[-1].published
        assert seen[-1].onion == address
        assert not own.status().running
        # Stopped by its pid, and a second close does nothing.
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        await own.close()
    # Attaching never owns: the tor we only attached to still runs and answers.
    async with await attach(client_tor) as again:
        assert await again.socks_port() == client_tor.socks_port
    assert client_tor.proc is not None
    assert client_tor.proc.poll() is None


async def test_the_address_survives_a_restart_from_the_same_home(
    tor_network: TorNetwork, client_tor: TorNode, echo_port: int, tmp_path: Path
) -> None:
    key_file = tmp_path / "home" / "data" / "tor.key"
    addresses = []
    async with await attach(client_tor) as visitor:
        for _ in range(2):
            keys = await asyncio.to_thread(load_or_create_tor_keys, key_file)
            assert key_file.stat().st_mode & 0o777 == 0o600
            async with await Tor.launch(
                tmp_path / "home" / "data" / "tor", extra_lines=tor_network.torrc_lines()
            ) as own:
                await own.wait_bootstrapped()
                addresses.append(await own.publish(keys.onion, echo_port))
                assert await echo(visitor, addresses[-1], b"still me") == b"still me"
    assert addresses[0] == addresses[1]


async def test_with_client_auth_only_authorised_clients_connect(
    tor_network: TorNetwork, echo_port: int, tmp_path: Path
) -> None:
    friend_key, stranger_key = ClientAuthKey.generate(), ClientAuthKey.generate()
    keys = await asyncio.to_thread(load_or_create_tor_keys, tmp_path / "tor.key")
    nodes = [tor_network.start_client(f"visitor{len(tor_network.clients)}") for _ in range(2)]
    for node in nodes:
        tor_network.wait_bootstrapped(node)
    async with (
        await Tor.launch(tmp_path / "tor", extra_lines=tor_network.torrc_lines()) as own,
        await attach(nodes[0]) as friend,
        await attach(nodes[1]) as stranger,
    ):
        await own.wait_bootstrapped()
        address = await own.publish(keys.onion, echo_port, authorized=[friend_key.public_key])
        assert own.status().client_auth
        await friend.add_client_auth(address, friend_key)
        assert await echo(friend, address, b"friend") == b"friend"

        # Without a key the service cannot even be found: no stream, no bytes.
        no_key = await refusal(stranger, address)
        assert no_key.reply is SocksReply.ONION_MISSING_CLIENT_AUTH
        assert not no_key.retry
        # With a key the service does not list, neither.
        await stranger.add_client_auth(address, stranger_key)
        bad_key = await refusal(stranger, address)
        assert bad_key.reply is SocksReply.ONION_BAD_CLIENT_AUTH

        # Listing the stranger's key at runtime lets them in; removing the friend's
        # keeps the friend out of new descriptors.
        started = time.monotonic()
        await own.set_authorized_clients([stranger_key.public_key])
        assert await echo(stranger, address, b"now a friend") == b"now a friend"
        print(f"\nclient list changed, new client in after {time.monotonic() - started:.1f}s")
        # The removed friend's open rendezvous circuit outlives the change (tor keeps
        # them so streams can finish; the daemon's Noise layer refuses them anyway):
        # on new circuits, the friend finds the service closed.
        await own.wait_published()
        await asyncio.to_thread(friend._controller.signal, "NEWNYM")
        with pytest.raises(SocksError) as dropped:
            await friend.dial(address, timeout=60)
        # (NEWNYM also made tor forget the friend's key: 0xF4 rather than 0xF5.)
        assert dropped.value.reply in (
            SocksReply.ONION_BAD_CLIENT_AUTH,
            SocksReply.ONION_MISSING_CLIENT_AUTH,
        )


async def test_secrets_and_the_address_stay_out_of_the_logs(
    tor_network: TorNetwork,
    echo_port: int,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    caplog.set_level(1)
    # As if the daemon's logging traced everything: stem then logs what it sends.
    stem_logger = logging.getLogger("stem")
    stem_logger.addHandler(caplog.handler)
    request.addfinalizer(lambda: stem_logger.removeHandler(caplog.handler))
    keys = await asyncio.to_thread(load_or_create_tor_keys, tmp_path / "tor.key")
    friend = ClientAuthKey.generate()
    async with await Tor.launch(tmp_path / "tor", extra_lines=tor_network.torrc_lines()) as own:
        await own.wait_bootstrapped()
        await own.publish(keys.onion, echo_port, authorized=[friend.public_key])
        await own.add_client_auth(keys.onion.address, friend)
        await own.wait_published(timeout=REACH_TIMEOUT)
        cookie = await asyncio.to_thread((tmp_path / "tor" / "control_auth_cookie").read_bytes)
    text = caplog.text
    assert "published" in text  # we did log, just not the secrets
    for secret in (
        keys.onion.tor_blob().split(":")[1],
        friend.tor_blob().split(":")[1],
        keys.client_auth.tor_blob().split(":")[1],
        cookie.hex(),
        keys.onion.address.service_id,
    ):
        assert secret not in text


async def test_figures(
    tor_network: TorNetwork, client_tor: TorNode, echo_port: int, tmp_path: Path
) -> None:
    """Measured, not asserted: start to reachable, RTT, 10 MB one way."""
    keys = await asyncio.to_thread(load_or_create_tor_keys, tmp_path / "tor.key")
    async with await attach(client_tor) as visitor:
        started = time.monotonic()
        async with await Tor.launch(tmp_path / "tor", extra_lines=tor_network.torrc_lines()) as own:
            await own.wait_bootstrapped()
            bootstrapped = time.monotonic() - started
            address = await own.publish(keys.onion, echo_port)
            reader, writer = await visitor.dial(address, timeout=REACH_TIMEOUT)
            reachable = time.monotonic() - started
            try:
                writer.write(b"E")
                rtts = []
                for _ in range(30):
                    t = time.monotonic()
                    writer.write(bytes(64))
                    await reader.readexactly(64)
                    rtts.append(time.monotonic() - t)
            finally:
                writer.close()

            size = 10 * 1024 * 1024
            payload = os.urandom(size)
            reader, writer = await visitor.dial(address, timeout=REACH_TIMEOUT)
            try:
                t = time.monotonic()
                writer.write(b"S" + size.to_bytes(8, "big") + payload)
                digest = await asyncio.wait_for(reader.readexactly(32), 300)
                elapsed = time.monotonic() - t
            finally:
                writer.close()
            assert digest == hashlib.sha256(payload).digest()
    # The same 10 MB straight to the server over loopback TCP, for scale.
    reader, writer = await asyncio.open_connection("127.0.0.1", echo_port)
    try:
        t = time.monotonic()
        writer.write(b"S" + size.to_bytes(8, "big") + payload)
        await asyncio.wait_for(reader.readexactly(32), 60)
        direct = time.monotonic() - t
    finally:
        writer.close()
    logging.getLogger(__name__).info("figures done")
    print(
        f"\ntor figures: bootstrapped {bootstrapped:.1f}s after launch, onion reachable "
        f"{reachable:.1f}s after launch; RTT median {statistics.median(rtts) * 1000:.1f} ms "
        f"(min {min(rtts) * 1000:.1f}, max {max(rtts) * 1000:.1f}); 10 MB one way in "
        f"{elapsed:.1f}s = {size / elapsed / 1e6:.2f} MB/s (direct loopback TCP "
        f"{size / direct / 1e6:.0f} MB/s); network consensus "
        f"{tor_network.timings['consensus']:.1f}s after start"
    )
