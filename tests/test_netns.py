"""Daemons on separate virtual hosts on one bridge, in network namespaces this test makes.

Needs root and iproute2 (CI runs as root); skipped elsewhere with the reason.
All traffic stays inside the namespaces created here (10.231.0.0/24).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from p2pmoments.core.pairing import decode_code, encode_code
from tests.daemons import Daemon, wait_for

pytestmark = [
    pytest.mark.root,
    pytest.mark.process,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("ip") is None,
        reason="needs root and iproute2 to create network namespaces (CI runs as root)",
    ),
]

SUBNET = "10.231.0"
TAG = f"p2p{os.getpid() % 100000}"
HOSTS = {"alice": 1, "bob": 2, "eve": 3}


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


def ns(host: str) -> str:
    return f"{TAG}-{host}"


def veth(host: str) -> str:
    return f"{TAG[:6]}{host[0]}"


@pytest.fixture(scope="module")
def lan() -> Iterator[dict[str, str]]:
    """A bridge in its own namespace and one namespace per host, cabled to it."""
    switch = ns("sw")
    made: list[str] = []
    try:
        sh("ip", "netns", "add", switch)
        made.append(switch)
        sh("ip", "-n", switch, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", switch, "link", "set", "br0", "up")
        for host, n in HOSTS.items():
            sh("ip", "netns", "add", ns(host))
            made.append(ns(host))
            inner, outer = veth(host), veth(host) + "s"
            sh(
                "ip",
                "link",
                "add",
                inner,
                "netns",
                ns(host),
                "type",
                "veth",
                "peer",
                outer,
                "netns",
                switch,
            )
            sh("ip", "-n", switch, "link", "set", outer, "master", "br0", "up")
            sh("ip", "-n", ns(host), "addr", "add", f"{SUBNET}.{n}/24", "dev", inner)
            sh("ip", "-n", ns(host), "link", "set", inner, "up")
            sh("ip", "-n", ns(host), "link", "set", "lo", "up")
            sh("ip", "-n", ns(host), "route", "add", "224.0.0.0/4", "dev", inner)
        yield {host: f"{SUBNET}.{n}" for host, n in HOSTS.items()}
    finally:
        for name in reversed(made):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def in_ns(host: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns(host), *args]


def cli(host: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        in_ns(host, sys.executable, "-m", "p2pmoments", "--home", str(home), *args),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class NsDaemon(Daemon):
    """A daemon inside a host's namespace, listening on its LAN address."""

    def __init__(self, host: str, home: Path, address: str) -> None:
        self.host = host
        super().__init__(home, "--listen", f"{address}:47470", mdns=True, prefix=in_ns(host))

    def _health(self, url: str) -> bool:
        return (
            subprocess.run(
                in_ns(
                    self.host,
                    sys.executable,
                    "-c",
                    f"import urllib.request; urllib.request.urlopen({url!r}, timeout=5)",
                ),
                capture_output=True,
                timeout=30,
                check=False,
            ).returncode
            == 0
        )


def peers(host: str, home: Path) -> list[dict[str, str]]:
    result = cli(host, home, "peers", "--json")
    return list(json.loads(result.stdout)) if result.returncode == 0 else []


def test_hosts_on_a_bridge_pair_by_mdns_survive_a_cut_and_strangers_learn_nothing(
    lan: dict[str, str], tmp_path: Path, daemons: list[Daemon]
) -> None:
    homes = {host: tmp_path / host for host in HOSTS}
    for host, home in homes.items():
        assert cli(host, home, "init", "--name", host.title()).returncode == 0
    for host in HOSTS:
        daemon = NsDaemon(host, homes[host], lan[host])
        daemons.append(daemon)
        daemon.wait_ready()

    # Pair with a code that carries no address: Bob's daemon must find Alice by mDNS.
    link = decode_code(cli("alice", homes["alice"], "qr", "--link").stdout.strip())
    bare = encode_code(replace(link, host=None, port=None))
    paired = cli("bob", homes["bob"], "pair", "--timeout", "30", bare)
    assert "now friends" in paired.stdout, paired.stdout + paired.stderr
    wait_for(lambda: peers("alice", homes["alice"]), timeout=30, what="Alice to link Bob")
    assert peers("bob", homes["bob"])[0]["address"] == f"{lan['alice']}:47470"

    # Eve, on the same bridge, sees the records but no identity or name in them.
    seen = subprocess.run(
        in_ns(
            "eve", sys.executable, str(Path(__file__).parent / "netns_browse.py"), lan["eve"], "4"
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    records = json.loads(seen.stdout)
    assert {r["port"] for r in records} >= {47470}
    text = seen.stdout.lower()
    for host in ("alice", "bob"):
        status = json.loads(cli(host, homes[host], "status", "--json").stdout)
        assert status["identity"][:20] not in text
        assert host not in text
    # Eve's daemon dialling Alice with its own keys gets not one byte back.
    probe = subprocess.run(
        in_ns("eve", sys.executable, "-c", PROBE, str(homes["eve"]), lan["alice"], bare),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert probe.stdout.strip() == "silence", probe.stdout + probe.stderr

    # Bob's host is cut off long enough for the link to die, then comes back.
    sh("ip", "-n", ns("bob"), "link", "set", veth("bob"), "down")
    wait_for(lambda: not peers("alice", homes["alice"]), timeout=90, what="the dead link")
    sh("ip", "-n", ns("bob"), "link", "set", veth("bob"), "up")
    sh("ip", "-n", ns("bob"), "route", "replace", "224.0.0.0/4", "dev", veth("bob"))
    wait_for(
        lambda: peers("alice", homes["alice"]) and peers("bob", homes["bob"]),
        timeout=90,
        what="Alice and Bob to reconnect",
    )
    for daemon in daemons:
        assert daemon.stop(signal.SIGTERM) == 0


PROBE = """
import socket, sys
from p2pmoments.home import load_identity
from p2pmoments.paths import resolve_paths
from p2pmoments.core.link import Link
from p2pmoments.core.pairing import decode_code
eve = load_identity(resolve_paths(sys.argv[1]))
alice = decode_code(sys.argv[3])
link = Link(identity=eve, name="Eve", initiator=True, now=0.0,
            remote_link_key=bytes(alice.link_key))
s = socket.create_connection((sys.argv[2], 47470), timeout=15)
s.sendall(link.data_to_send())
s.settimeout(15)
try:
    data = s.recv(1024)
except (ConnectionResetError, TimeoutError):
    data = b""
print("silence" if not data else "answered: " + data.hex())
"""
