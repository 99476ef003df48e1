"""Two real daemon processes pair through the CLI."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.daemons import Daemon, cli, start_daemon, wait_for

pytestmark = pytest.mark.process


def init(tmp_path: Path, name: str) -> Path:
    home = tmp_path / name.lower()
    result = cli(home, "init", "--name", name)
    assert result.returncode == 0, result.stderr
    return home


def friends(home: Path) -> list[dict[str, object]]:
    result = cli(home, "friends", "--json")
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout)["friends"])


def test_two_daemons_pair_with_one_scan(tmp_path: Path, daemons: list[Daemon]) -> None:
    alice, bob = init(tmp_path, "Alice"), init(tmp_path, "Bob")
    start_daemon(daemons, alice)
    start_daemon(daemons, bob)
    shown = cli(alice, "qr")
    assert shown.returncode == 0, shown.stderr
    assert "\u2588" in shown.stdout or "\u2580" in shown.stdout  # a QR code drawn in text
    link = cli(alice, "qr", "--link").stdout.strip()
    assert link.startswith("P2PM:1/")

    paired = cli(bob, "pair", link)
    assert paired.returncode == 0, paired.stderr
    assert "You and Alice are now friends." in paired.stdout

    wait_for(lambda: friends(alice), timeout=15, what="Alice to record Bob")
    assert [f["name"] for f in friends(alice)] == ["Bob"]
    assert [f["name"] for f in friends(bob)] == ["Alice"]
    peers = json.loads(cli(bob, "peers", "--json").stdout)
    assert [p["name"] for p in peers] == ["Alice"]
    listing = cli(alice, "friends")
    assert "Bob" in listing.stdout

    reused = cli(init(tmp_path, "Carol"), "--help")  # Carol exists but is not running yet
    assert reused.returncode == 0
    carol_daemon = start_daemon(daemons, tmp_path / "carol")
    started = time.monotonic()
    again = cli(carol_daemon.home, "pair", "--timeout", "20", link)
    assert again.returncode == 1  # Carol proved she saw the code: she is told at once
    assert "already used by another device" in again.stdout
    assert "fresh code" in again.stdout
    assert time.monotonic() - started < 10  # not the whole wait
    wait_for(
        lambda: "refused" in cli(alice, "friends").stdout,
        timeout=15,
        what="Alice to show the refusal",
    )
    assert "already used by another device" in cli(alice, "friends").stdout


def test_pending_then_confirmed_when_the_owner_comes_online(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    alice, bob = init(tmp_path, "Alice"), init(tmp_path, "Bob")
    first = start_daemon(daemons, alice, "--listen", "127.0.0.1:0")
    link = cli(alice, "qr", "--link").stdout.strip()
    peer_address = first.info["listen"][0]
    assert first.stop(signal.SIGTERM) == 0  # Alice goes offline

    start_daemon(daemons, bob)
    pending = cli(bob, "pair", "--no-wait", link)
    assert pending.returncode == 0, pending.stderr
    assert "Pending" in pending.stdout
    assert friends(bob) == []

    # Alice comes back on the same address; Bob's daemon completes the pairing by itself.
    start_daemon(daemons, alice, "--listen", peer_address)
    wait_for(lambda: friends(bob), timeout=30, what="Bob's daemon to reach Alice")
    assert [f["name"] for f in friends(bob)] == ["Alice"]
    wait_for(lambda: friends(alice), timeout=15, what="Alice to record Bob")


def test_bad_links_are_refused_with_a_reason(tmp_path: Path, daemons: list[Daemon]) -> None:
    bob = init(tmp_path, "Bob")
    start_daemon(daemons, bob)
    for link, reason in [
        ("P2PM:1/AAAA", "incomplete"),
        ("hello", "not a p2pmoments pairing"),
        ("P2PM:9/A/B", "version 9"),
    ]:
        result = cli(bob, "pair", link)
        assert result.returncode == 1
        assert reason in result.stderr
    own = cli(bob, "qr", "--link").stdout.strip()
    result = cli(bob, "pair", own)
    assert result.returncode == 1
    assert "your own pairing code" in result.stderr


def test_pair_from_a_picture_of_the_code(tmp_path: Path, daemons: list[Daemon]) -> None:
    pytest.importorskip("zxingcpp")
    alice, bob = init(tmp_path, "Alice"), init(tmp_path, "Bob")
    start_daemon(daemons, alice)
    start_daemon(daemons, bob)
    image = tmp_path / "code.png"
    assert cli(alice, "qr", "--png", str(image)).returncode == 0
    paired = cli(bob, "pair", "--image", str(image))
    assert paired.returncode == 0, paired.stderr
    assert "now friends" in paired.stdout
    not_a_code = tmp_path / "blank.png"
    from PIL import Image

    Image.new("RGB", (100, 100), "white").save(not_a_code)
    result = cli(bob, "pair", "--image", str(not_a_code))
    assert result.returncode == 1
    assert "no p2pmoments pairing code found" in result.stderr
