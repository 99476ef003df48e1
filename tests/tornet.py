"""A private Tor network on 127.0.0.1 for tests, built the way Tor's chutney does.

Three directory authorities (keys from `tor-gencert`) and four relays, every one
with `TestingTorNetwork 1` and ports chosen free at start; client tors join it
with `torrc_lines()`, which is also what a daemon's own tor must include. Nothing
here can reach the public network: the only directory authorities are ours, the
default fallback directories are off, no relay is an exit, and every address is
127.0.0.1. Every tor is a child stopped by its pid; each also names an owner
(`__OwningControllerProcess`): a small watchdog child that exits when this
process does, so the tors exit by themselves if the test run dies. Not this
process itself: stem, seeing its own pid there, would take ownership of a tor
our code merely attaches to, and closing that connection would stop it.

Start-up: keys are made in parallel (a few seconds); the authorities' voting
schedule is shifted (`TestingV3AuthVotingStartOffset`, as chutney's scripts do)
so the first consensus falls a fixed time after launch instead of at the next
multiple of the voting interval on the wall clock; clients are started only
once that consensus can be fetched (chutney's launch phases), so they never
back off on 404s. spec/tor.md gives the figures measured with these options.

Run it alone to see the timings: `python -m tests.tornet`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

AUTHORITIES = 3
RELAYS = 4
# The initial voting interval and its delays (chutney's old fast values: vote and
# distribution must together take less than half the interval, which tor uses
# before it has a consensus). Later consensuses come every VOTING_INTERVAL.
INITIAL_INTERVAL = 10
VOTING_INTERVAL = 20
VOTE_DELAY = 2
DIST_DELAY = 2
# The first consensus is made for the first interval boundary at least this long
# after launch: time for the relays to start and upload their descriptors.
FIRST_VALID_AFTER = 9
START_TIMEOUT = 120.0
STOP_TIMEOUT = 15.0
INFO_ENV = "P2PM_TORNET_INFO"
WATCHDOG = """
import os, sys, time
while os.getppid() == int(sys.argv[1]):
    time.sleep(1)
"""

# What any tor needs to join (with the DirAuthority lines): no default
# authorities or fallbacks, IPv4 loopback only, circuits from a handful of relays.
JOIN = [
    "TestingTorNetwork 1",
    "UseDefaultFallbackDirs 0",
    "ClientUseIPv6 0",
    "PathsNeededToBuildCircuits 0.67",
    # Fetch the consensus and microdescriptors from the authorities, as caches do:
    # relays get them a few seconds after a consensus, and a client asking a relay
    # too early stalls about 10 s on its retry schedule.
    "FetchDirInfoEarly 1",
    "FetchDirInfoExtraEarly 1",
]
COMMON = [
    *JOIN,
    "TestingDirAuthVoteGuard *",
    "TestingDirAuthVoteHSDir *",
    "TestingMinExitFlagThreshold 0",
    "V3AuthNIntervalsValid 2",
    "ShutdownWaitLength 1",
    "RunAsDaemon 0",
    "SafeLogging 0",
    "LogTimeGranularity 1",
    # Reading the GeoIP databases costs each tor about a second of CPU at start.
    "GeoIPFile /dev/null",
    "GeoIPv6File /dev/null",
]
RELAY = [
    "Address 127.0.0.1",
    "AssumeReachable 1",
    "SocksPort 0",
    "ExitRelay 0",
    "ExitPolicy reject *:*",
    "ServerDNSResolvConfFile /dev/null",
    "TestingServerDownloadInitialDelay 0",
    "TestingServerConsensusDownloadInitialDelay 0",
]
AUTHORITY = [
    "AuthoritativeDirectory 1",
    "V3AuthoritativeDirectory 1",
    f"TestingV3AuthInitialVotingInterval {INITIAL_INTERVAL}",
    f"TestingV3AuthInitialVoteDelay {VOTE_DELAY}",
    f"TestingV3AuthInitialDistDelay {DIST_DELAY}",
    f"V3AuthVotingInterval {VOTING_INTERVAL}",
    f"V3AuthVoteDelay {VOTE_DELAY}",
    f"V3AuthDistDelay {DIST_DELAY}",
]


class TorNetworkError(RuntimeError):
    """The private network did not come up; the message has the tor logs' tails."""


def _info_log(node: TorNode) -> list[str]:
    """An info-level log too, when P2PM_TORNET_INFO=1 (to see why a connect stalls)."""
    return [f"Log info file {node.data_dir / 'info.log'}"] if os.environ.get(INFO_ENV) else []


def tor_binaries() -> tuple[str, str] | None:
    """The paths of `tor` and `tor-gencert`, or None if either is missing."""
    tor, gencert = shutil.which("tor"), shutil.which("tor-gencert")
    return (tor, gencert) if tor and gencert else None


def free_ports(n: int) -> list[int]:
    """`n` distinct free TCP ports on 127.0.0.1 (held together while chosen)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def wait_for(condition: Callable[[], T | None], *, timeout: float, what: str) -> T:
    """Poll `condition` until it returns something truthy; TorNetworkError after `timeout`."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TorNetworkError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


@dataclass(slots=True)
class TorNode:
    """One tor process of the network."""

    name: str
    data_dir: Path
    control_port: int
    or_port: int = 0
    dir_port: int = 0
    socks_port: int = 0
    fingerprint: str = ""
    v3ident: str = ""
    proc: subprocess.Popen[bytes] | None = None
    lines: list[str] = field(default_factory=list)

    @property
    def torrc(self) -> Path:
        return self.data_dir / "torrc"

    @property
    def log(self) -> Path:
        return self.data_dir / "notice.log"

    def log_tail(self, n: int = 15) -> str:
        text = ""
        for path in (self.log, self.data_dir / "stdout.log"):
            with contextlib.suppress(OSError):
                text += "".join(path.read_text(errors="replace").splitlines(True)[-n:])
        return text

    def bootstrapped(self) -> bool:
        """Whether this tor has logged "Bootstrapped 100%"."""
        self.check_alive()
        try:
            return "Bootstrapped 100%" in self.log.read_text(errors="replace")
        except OSError:
            return False

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise TorNetworkError(
                f"tor {self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
            )

    def launch(self, tor: str, owner: int) -> None:
        self.torrc.write_text("\n".join([*self.lines, f"__OwningControllerProcess {owner}"]) + "\n")
        with (self.data_dir / "stdout.log").open("wb") as out:
            self.proc = subprocess.Popen(
                [tor, "-f", str(self.torrc)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.data_dir,
            )

    def stop(self) -> None:
        """SIGTERM by pid, then SIGKILL if it does not go."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)


class TorNetwork:
    """Authorities and relays on loopback, and client tors started on demand."""

    def __init__(
        self,
        root: Path,
        *,
        tor: str = "tor",
        gencert: str = "tor-gencert",
        authorities: int = AUTHORITIES,
        relays: int = RELAYS,
    ) -> None:
        self.root = root
        self.tor = tor
        self.gencert = gencert
        self.nodes: list[TorNode] = []
        self.clients: list[TorNode] = []
        self._n_auth = authorities
        self._n_relay = relays
        self.timings: dict[str, float] = {}
        self._t0 = 0.0
        self._watchdog: subprocess.Popen[bytes] | None = None

    # -- what a member of the network needs ---------------------------------

    def torrc_lines(self) -> list[str]:
        """The torrc lines any tor needs to join this network (a daemon's own tor too)."""
        return [*JOIN, *self.dir_authority_lines()]

    def dir_authority_lines(self) -> list[str]:
        return [
            f"DirAuthority {n.name} orport={n.or_port} no-v2 v3ident={n.v3ident} "
            f"127.0.0.1:{n.dir_port} {n.fingerprint}"
            for n in self.nodes[: self._n_auth]
        ]

    # -- life cycle ---------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Make keys, launch authorities and relays, wait for the first consensus."""
        self._t0 = time.monotonic()
        try:
            self._start_watchdog()
            self._make_nodes()
            self._make_keys()
            self.timings["keys"] = time.monotonic() - self._t0
            self._write_configs()
            for node in self.nodes:
                node.launch(self.tor, self.owner)
            self.timings["launched"] = time.monotonic() - self._t0
            wait_for(self._has_consensus, timeout=timeout, what="the first consensus")
            self.timings["consensus"] = time.monotonic() - self._t0
        except BaseException:
            self.stop()
            raise

    def start_client(self, name: str, extra: list[str] | None = None) -> TorNode:
        """A client tor with a SocksPort (ExtendedErrors) and a ControlPort (cookie auth)."""
        control, socks = free_ports(2)
        node = TorNode(name=name, data_dir=self.root / name, control_port=control, socks_port=socks)
        node.data_dir.mkdir(mode=0o700)
        node.lines = [
            *COMMON,
            f"Nickname {name}",
            f"DataDirectory {node.data_dir}",
            f"Log notice file {node.log}",
            f"ControlPort 127.0.0.1:{control}",
            "CookieAuthentication 1",
            f"SocksPort 127.0.0.1:{socks} ExtendedErrors",
            f"ClientOnionAuthDir {node.data_dir / 'onion_auth'}",
            *self.dir_authority_lines(),
            *_info_log(node),
            *(extra or []),
        ]
        (node.data_dir / "onion_auth").mkdir(mode=0o700)
        self.clients.append(node)
        node.launch(self.tor, self.owner)
        return node

    def wait_bootstrapped(self, node: TorNode, timeout: float = START_TIMEOUT) -> None:
        wait_for(node.bootstrapped, timeout=timeout, what=f"tor {node.name} to bootstrap")

    @property
    def owner(self) -> int:
        """The pid every tor of this network names as its owner."""
        assert self._watchdog is not None, "start() first"
        return self._watchdog.pid

    def stop(self) -> None:
        """Stop every tor this network started, each by its pid, then the watchdog."""
        for node in [*self.clients, *self.nodes]:
            node.stop()
        if self._watchdog is not None and self._watchdog.poll() is None:
            self._watchdog.kill()
            self._watchdog.wait(timeout=STOP_TIMEOUT)

    def _start_watchdog(self) -> None:
        # Polls once a second whether its parent (this process) is still there.
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", WATCHDOG, str(os.getpid())], stdin=subprocess.DEVNULL
        )

    def __enter__(self) -> TorNetwork:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- inside -------------------------------------------------------------

    def _make_nodes(self) -> None:
        count = self._n_auth + self._n_relay
        ports = iter(free_ports(3 * count))
        for i in range(count):
            name = f"auth{i}" if i < self._n_auth else f"relay{i - self._n_auth}"
            node = TorNode(
                name=name,
                data_dir=self.root / name,
                control_port=next(ports),
                or_port=next(ports),
                dir_port=next(ports),
            )
            (node.data_dir / "keys").mkdir(parents=True, mode=0o700)
            node.data_dir.chmod(0o700)
            self.nodes.append(node)

    def _make_keys(self) -> None:
        """Authority certificates and relay fingerprints, all made at once."""
        procs: list[tuple[TorNode, str, subprocess.Popen[bytes]]] = []
        for node in self.nodes[: self._n_auth]:
            keys = node.data_dir / "keys"
            proc = subprocess.Popen(
                [
                    self.gencert,
                    "--create-identity-key",
                    "--passphrase-fd",
                    "0",
                    "-i",
                    str(keys / "authority_identity_key"),
                    "-s",
                    str(keys / "authority_signing_key"),
                    "-c",
                    str(keys / "authority_certificate"),
                    "-m",
                    "12",
                    "-a",
                    f"127.0.0.1:{node.dir_port}",
                ],
                stdin=subprocess.DEVNULL,  # an empty passphrase
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            procs.append((node, "gencert", proc))
        # Only authorities need their fingerprints known before launch (for the
        # DirAuthority lines); relays make their keys when they start.
        for node in self.nodes[: self._n_auth]:
            proc = subprocess.Popen(
                [
                    self.tor,
                    "--ignore-missing-torrc",
                    "-f",
                    os.devnull,
                    "--ORPort",
                    "1",
                    "--DataDirectory",
                    str(node.data_dir),
                    "--list-fingerprint",
                    "--Log",
                    "err stdout",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            procs.append((node, "fingerprint", proc))
        for node, what, proc in procs:
            out, _ = proc.communicate(timeout=START_TIMEOUT)
            text = out.decode(errors="replace")
            if proc.returncode != 0:
                raise TorNetworkError(f"{what} for {node.name} failed:\n{text}")
            if what == "fingerprint":
                node.fingerprint = "".join(text.strip().splitlines()[-1].split()[1:])
        for node in self.nodes[: self._n_auth]:
            cert = (node.data_dir / "keys" / "authority_certificate").read_text()
            node.v3ident = next(
                line.split()[1] for line in cert.splitlines() if line.startswith("fingerprint ")
            )

    def _write_configs(self) -> None:
        # Shift the voting schedule so that an interval boundary falls
        # FIRST_VALID_AFTER seconds from now (tor counts boundaries from midnight UTC
        # plus this offset).
        offset = int(time.time() + FIRST_VALID_AFTER) % INITIAL_INTERVAL
        authorities = self.dir_authority_lines()
        for i, node in enumerate(self.nodes):
            node.lines = [
                *COMMON,
                *RELAY,
                f"Nickname {node.name}",
                f"DataDirectory {node.data_dir}",
                f"Log notice file {node.log}",
                f"ControlPort 127.0.0.1:{node.control_port}",
                "CookieAuthentication 1",
                f"ORPort 127.0.0.1:{node.or_port}",
                f"DirPort 127.0.0.1:{node.dir_port}",
                f"ContactInfo {node.name}@test.invalid",
                *authorities,
            ]
            if i < self._n_auth:
                node.lines += [*AUTHORITY, f"TestingV3AuthVotingStartOffset {offset}"]

    def _has_consensus(self) -> bool:
        """Whether every authority serves a microdescriptor consensus."""
        for node in self.nodes:
            node.check_alive()
        for node in self.nodes[: self._n_auth]:
            url = f"http://127.0.0.1:{node.dir_port}/tor/status-vote/current/consensus-microdesc"
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status != 200:
                        return False
            except (urllib.error.URLError, OSError):
                return False
        return True

    def since_start(self) -> float:
        return time.monotonic() - self._t0


@contextlib.contextmanager
def running_network(root: Path) -> Iterator[TorNetwork]:
    """A started network in `root`, stopped on exit."""
    found = tor_binaries()
    if found is None:
        raise TorNetworkError("tor and tor-gencert are needed (apt install tor)")
    network = TorNetwork(root, tor=found[0], gencert=found[1])
    with network:
        yield network


def main() -> None:
    """Start a network and two clients, print the timings, stop everything."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, running_network(Path(tmp)) as net:
        print(f"keys {net.timings['keys']:.1f}s, consensus {net.timings['consensus']:.1f}s")
        clients = [net.start_client(f"client{i}") for i in range(2)]
        for c in clients:
            net.wait_bootstrapped(c)
            print(f"{c.name} bootstrapped at {net.since_start():.1f}s")


if __name__ == "__main__":
    main()
