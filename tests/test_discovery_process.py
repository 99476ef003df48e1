"""Real daemon processes find each other through mDNS on loopback."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.daemons import Daemon, cli, wait_for

pytestmark = pytest.mark.process


def peers(home: Path) -> list[dict[str, str]]:
    result = cli(home, "peers", "--json")
    return list(json.loads(result.stdout)) if result.returncode == 0 else []


def test_three_daemons_find_each_other_by_mdns_and_reconnect(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    homes = {name: tmp_path / name for name in ("alice", "bob", "carol")}
    for name, home in homes.items():
        assert cli(home, "init", "--name", name.title()).returncode == 0

    def start(name: str) -> Daemon:
        daemon = Daemon(homes[name], mdns=True)
        daemons.append(daemon)
        daemon.wait_ready()
        return daemon

    running = {name: start(name) for name in homes}
    for scanner, owner in (("bob", "alice"), ("carol", "alice"), ("carol", "bob")):
        link = cli(homes[owner], "qr", "--link").stdout.strip()
        assert cli(homes[scanner], "pair", link).returncode == 0
    for home in homes.values():
        wait_for(lambda h=home: len(peers(h)) == 2, timeout=30, what="a full mesh")

    # Everyone restarts on a new port: stored addresses are stale, only mDNS helps.
    for daemon in running.values():
        assert daemon.stop(signal.SIGTERM) == 0
    running = {name: start(name) for name in homes}
    for home in homes.values():
        wait_for(lambda h=home: len(peers(h)) == 2, timeout=60, what="the mesh again via mDNS")
    found = [p["found_via"] for h in homes.values() for p in peers(h)]
    assert "mdns" in found
    assert "address" not in found  # no stale address could have worked

    # One leaves and comes back: the others notice and reconnect.
    assert running["bob"].stop(signal.SIGTERM) == 0
    wait_for(lambda: len(peers(homes["alice"])) == 1, timeout=60, what="Alice to see Bob go")
    start("bob")
    for home in homes.values():
        wait_for(lambda h=home: len(peers(h)) == 2, timeout=60, what="Bob to be back")
