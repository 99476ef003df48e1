"""The soak's LAN (tests/chaos.py): hosts in network namespaces this module makes, cabled
to bridges in a switch namespace, and the daemons on them, driven through their API.

Faults it can inject, each undone by the matching call:
- cut(i) / mend(i): host i's cable unplugged (its switch-side veth down);
- split(group) / heal(): the hosts of `group` moved to a second bridge, so each side still
  talks within itself (a real partition, not one host alone);
- netem(i, ...) / clear_netem(i): loss, delay and reordering on host i's interface (tc);
  where the kernel has no netem, a slow link instead (tbf: a low rate and a short queue,
  so packets wait, and are dropped when the queue is full, as on a poor Wi-Fi), and a
  reordering link (reorder(i, ...): htb, with one packet in four, chosen by its IP ID, sent
  through a slower class, so it arrives after packets sent behind it);
- a daemon started with its clock hours off (libfaketime, Node.start(skew_hours=...)).

All traffic stays inside the namespaces (10.232.0.0/24). The control API listens on each
host's own loopback: this process reaches it from a thread that joined the host's
namespace (setns), so no API traffic crosses the LAN the faults act on.
"""

from __future__ import annotations

import ctypes
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tests.daemons import Daemon, cli

T = TypeVar("T")
SUBNET = "10.232.0"
PORT = 47470
CLONE_NEWNET = 0x40000000
FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
_libc = ctypes.CDLL(None, use_errno=True)


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=30)


def lan_unavailable() -> str | None:
    """Why no namespaced LAN can be made here, or None."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces (CI runs as root)"
    if shutil.which("ip") is None:
        return "needs iproute2 (`ip netns`)"
    probe = f"soakprobe{os.getpid()}"
    made = sh("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` fails here: {made.stderr.strip()}"
    sh("ip", "netns", "del", probe, check=False)
    return None


def in_netns(netns: str, fn: Callable[[], T]) -> T:
    """Run `fn` on a thread that joined `netns`: the sockets it opens live there."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {netns}")
            finally:
                os.close(fd)
            box["value"] = fn()
        except BaseException as error:
            box["error"] = error

    thread = threading.Thread(target=run, name=f"in-{netns}")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


class Lan:
    """A switch namespace with two bridges, and `size` host namespaces cabled to br0."""

    def __init__(self, size: int) -> None:
        self.tag = f"k{os.getpid() % 10000}"
        self.size = size
        self.made: list[str] = []
        self.cut_hosts: set[int] = set()
        self.split_hosts: set[int] = set()
        self.netem_hosts: set[int] = set()
        self.shaped_drops = 0  # packets netem or a slow link dropped (tc -s), shaping undone

    def ns(self, i: int) -> str:
        return f"{self.tag}-h{i}"

    def address(self, i: int) -> str:
        return f"{SUBNET}.{i + 1}"

    def _inner(self, i: int) -> str:
        return f"{self.tag}n{i}"

    def _outer(self, i: int) -> str:
        return f"{self.tag}s{i}"

    def __enter__(self) -> Lan:
        switch = f"{self.tag}-sw"
        self.switch = switch
        try:
            sh("ip", "netns", "add", switch)
            self.made.append(switch)
            for bridge in ("br0", "br1"):
                sh("ip", "-n", switch, "link", "add", bridge, "type", "bridge")
                sh("ip", "-n", switch, "link", "set", bridge, "up")
            for i in range(self.size):
                sh("ip", "netns", "add", self.ns(i))
                self.made.append(self.ns(i))
                inner, outer = self._inner(i), self._outer(i)
                sh(
                    "ip",
                    "link",
                    "add",
                    inner,
                    "netns",
                    self.ns(i),
                    "type",
                    "veth",
                    "peer",
                    outer,
                    "netns",
                    switch,
                )
                sh("ip", "-n", switch, "link", "set", outer, "master", "br0", "up")
                sh("ip", "-n", self.ns(i), "addr", "add", f"{self.address(i)}/24", "dev", inner)
                sh("ip", "-n", self.ns(i), "link", "set", inner, "up")
                sh("ip", "-n", self.ns(i), "link", "set", "lo", "up")
                sh("ip", "-n", self.ns(i), "route", "add", "224.0.0.0/4", "dev", inner)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for name in reversed(self.made):
            sh("ip", "netns", "del", name, check=False)
        self.made.clear()

    def cut(self, i: int) -> None:
        sh("ip", "-n", self.switch, "link", "set", self._outer(i), "down")
        self.cut_hosts.add(i)

    def mend(self, i: int) -> None:
        sh("ip", "-n", self.switch, "link", "set", self._outer(i), "up")
        self.cut_hosts.discard(i)

    def split(self, group: set[int]) -> None:
        for i in group:
            sh("ip", "-n", self.switch, "link", "set", self._outer(i), "master", "br1")
        self.split_hosts = set(group)

    def heal(self) -> None:
        for i in sorted(self.split_hosts):
            sh("ip", "-n", self.switch, "link", "set", self._outer(i), "master", "br0")
        self.split_hosts.clear()

    def netem(self, i: int, *spec: str, qdisc: str = "netem") -> None:
        """Shape host i's interface with `qdisc` (netem; tbf where there is no netem)."""
        self._qdisc(i, qdisc, *spec)
        self.netem_hosts.add(i)

    def _qdisc(
        self, i: int, qdisc: str, *spec: str, check: bool = True, handle: str | None = None
    ) -> str | None:
        """Replace host i's root qdisc; the error if it was refused (and not `check`)."""
        dev = self._inner(i)
        tried = sh(
            *("ip", "netns", "exec", self.ns(i), "tc", "qdisc", "replace", "dev", dev, "root"),
            *(("handle", handle) if handle else ()),
            *(qdisc, *spec),
            check=check,
        )
        return tried.stderr.strip() or "refused" if tried.returncode != 0 else None

    def reorder(self, i: int, fast: str, slow: str, queue: int) -> None:
        """Send one of host i's packets in four (IP ID ending in binary 11) through a class
        `slow` while the rest go at `fast`: the slow ones arrive after packets sent behind
        them. Each class drops what overflows a queue of `queue` packets."""
        dev, tc = self._inner(i), ("ip", "netns", "exec", self.ns(i), "tc")
        if i in self.netem_hosts:  # an htb cannot be replaced by an htb: undo it first
            self.clear_netem(i)
        self._qdisc(i, "htb", "default", "10", handle="1:")
        for minor, rate in (("10", fast), ("20", slow)):
            sh(*tc, "class", "add", "dev", dev, "parent", "1:", "classid", f"1:{minor}",
               "htb", "rate", rate, "ceil", rate, "burst", "1600", "cburst", "1600")  # fmt: skip
            leaf = ("pfifo", "limit", str(queue))
            sh(*tc, "qdisc", "add", "dev", dev, "parent", f"1:{minor}", *leaf)
        sh(*tc, "filter", "add", "dev", dev, "parent", "1:", "protocol", "ip", "prio", "1",
           "u32", "match", "u16", "0x3", "0x3", "at", "4", "flowid", "1:20")  # fmt: skip
        self.netem_hosts.add(i)

    def reorder_unavailable(self) -> str | None:
        """Why reorder() cannot work here (no htb or no u32 classifier), or None."""
        try:
            self.reorder(0, "8mbit", "1mbit", 10)
        except subprocess.CalledProcessError as refused:
            self.clear_netem(0)
            return f"tc htb with a u32 filter refused ({(refused.stderr or '').strip()})"
        self.clear_netem(0)
        return None

    def reordered(self) -> int:
        """Segments that TCP senders on the hosts found had been reordered (nstat's
        TCP*Reorder counters of each host namespace, since it was made)."""
        total = 0
        for i in range(self.size):
            text = sh("ip", "netns", "exec", self.ns(i), "cat", "/proc/net/netstat").stdout
            lines = [line.split() for line in text.splitlines() if line.startswith("TcpExt:")]
            if len(lines) >= 2:
                names, values = lines[0], lines[1]
                pairs = zip(names, values, strict=True)
                total += sum(int(v) for n, v in pairs if n.endswith("Reorder"))
        return total

    def clear_netem(self, i: int) -> None:
        dev = self._inner(i)
        shown = sh("ip", "netns", "exec", self.ns(i), "tc", "-s", "qdisc", "show", "dev", dev)
        # A reordering link's htb counts again what its classes' queues dropped: leaves only.
        leaves = [part for part in shown.stdout.split("qdisc ")[1:] if not part.startswith("htb")]
        self.shaped_drops += sum(
            int(n) for part in leaves for n in re.findall(r"dropped (\d+)", part)
        )
        sh("ip", "netns", "exec", self.ns(i), "tc", "qdisc", "del", "dev", dev, "root", check=False)
        self.netem_hosts.discard(i)

    def netem_unavailable(self, qdisc: str = "netem", *spec: str) -> str | None:
        """Why `tc` cannot shape with `qdisc` here (netem by default), or None."""
        if shutil.which("tc") is None:
            return "tc is missing (apt-get install iproute2)"
        refused = self._qdisc(0, qdisc, *(spec or ("delay", "1ms")), check=False)
        if refused is not None:
            return f"tc {qdisc} refused ({refused}): no sch_{qdisc} in this kernel"
        self.clear_netem(0)
        return None

    def heal_all(self) -> None:
        for i in sorted(self.cut_hosts):
            self.mend(i)
        self.heal()
        for i in sorted(self.netem_hosts):
            self.clear_netem(i)


def faketime_unavailable() -> str | None:
    """Why a daemon's clock cannot be skewed here, or None."""
    if not FAKETIME_LIB.exists():
        return f"libfaketime is missing ({FAKETIME_LIB}; apt-get install faketime)"
    return None


class NsDaemon(Daemon):
    """A daemon in a host's namespace, listening on its LAN address, API on its loopback."""

    def __init__(self, netns: str, home: Path, address: str, env: dict[str, str]) -> None:
        self.netns = netns
        super().__init__(
            home,
            "--listen",
            f"{address}:{PORT}",
            mdns=True,
            prefix=["ip", "netns", "exec", netns],
            env=env,
        )

    def _health(self, url: str) -> bool:
        port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
        try:
            status, _ = in_netns(self.netns, lambda: _http(port, "GET", "/api/v1/health"))
        except OSError:
            return False
        return status == 200


def _http(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
    sink: Callable[[bytes], None] | None = None,
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        if sink is None or response.status != 200:
            return response.status, response.read()
        for _ in range(1 << 20):  # bounded: 1 Mi pieces of up to 1 MiB
            piece = response.read(1 << 20)
            if not piece:
                break
            sink(piece)
        return response.status, b""
    finally:
        conn.close()


class Node:
    """One host of the LAN and the daemon on it (stopped and restarted as faults ask)."""

    def __init__(self, lan: Lan, index: int, root: Path) -> None:
        self.lan, self.index = lan, index
        self.name = f"N{index}"
        self.home = root / self.name
        self.daemon: NsDaemon | None = None
        self.skew_hours = 0
        self.lifetimes = 0
        self.identity = ""
        self.logs: list[Path] = []

    @property
    def up(self) -> bool:
        return self.daemon is not None and self.daemon.proc.poll() is None

    def init(self) -> None:
        made = cli(self.home, "init", "--name", self.name)
        assert made.returncode == 0, made.stderr

    def start(self, skew_hours: int = 0) -> None:
        env = dict(os.environ, P2PMOMENTS_HOME="")
        if skew_hours:
            env |= {
                "LD_PRELOAD": str(FAKETIME_LIB),
                "FAKETIME": f"{skew_hours:+d}h",
                # Timers and timeouts keep real time; only the wall clock is off.
                "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            }
        self.skew_hours = skew_hours
        netns, address = self.lan.ns(self.index), self.lan.address(self.index)
        self.daemon = NsDaemon(netns, self.home, address, env)
        self.logs.append(self.daemon.log)
        self.daemon.wait_ready(timeout=60)
        self.lifetimes += 1
        if not self.identity:
            self.identity = self.api("GET", "/status")[1]["identity"]

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> int:
        assert self.daemon is not None
        code = self.daemon.stop(sig)
        self.daemon = None
        return code

    def close(self) -> None:
        if self.daemon is not None:
            self.daemon.close()
            self.daemon = None

    def _port_token(self) -> tuple[int, str]:
        assert self.daemon is not None
        url = self.daemon.info["api_url"]
        token = (self.home / "data" / "api.token").read_text().strip()
        return int(url.rsplit(":", 1)[1].split("/", 1)[0]), token

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str = "application/json",
        timeout: float = 30,
        sink: Callable[[bytes], None] | None = None,
    ) -> tuple[int, bytes]:
        port, token = self._port_token()
        headers = {
            "Host": f"127.0.0.1:{port}",
            "Authorization": f"Bearer {token}",
            "Content-Type": content_type,
        }
        return in_netns(
            self.lan.ns(self.index),
            lambda: _http(port, method, "/api/v1" + path, body, headers, timeout, sink),
        )

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        status, data = self.request(method, path, data)
        return status, json.loads(data) if data else None

    def sha256(self, path: str) -> str | None:
        digest = hashlib.sha256()
        status, _ = self.request("GET", path, timeout=120, sink=digest.update)
        return digest.hexdigest() if status == 200 else None

    def usage(self) -> tuple[int, int]:
        """The daemon's resident memory (KiB) and open file descriptors."""
        assert self.daemon is not None
        pid = self.daemon.proc.pid
        status = Path(f"/proc/{pid}/status").read_text()
        rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
        return rss, len(os.listdir(f"/proc/{pid}/fd"))


def multipart(fields: list[tuple[str, str | None, str | None, bytes]]) -> tuple[bytes, str]:
    """(name, filename, type, data) parts as a multipart/form-data body and its type."""
    boundary = "soak" + hashlib.sha256(repr([f[:3] for f in fields]).encode()).hexdigest()[:24]
    out = bytearray()
    for name, filename, ctype, data in fields:
        out += f"--{boundary}\r\n".encode()
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"Content-Disposition: {disposition}\r\n".encode()
        if ctype is not None:
            out += f"Content-Type: {ctype}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"
