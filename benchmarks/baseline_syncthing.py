"""Baseline for issue 13: Syncthing moving one file between two instances on loopback.

    .venv/bin/python benchmarks/baseline_syncthing.py [--size MB ...] [--rounds 3] [--json FILE]

Two `syncthing serve` processes (the distribution's, found on PATH or installed with
apt-get when root), each with its own home in a temporary folder, listen on
tcp://127.0.0.1 only; each knows the other's device ID and address; global and local
discovery, relays, NAT traversal, usage and crash reporting, upgrades and low priority
are off; the REST API is on 127.0.0.1 with a random API key. They share one folder,
with file-system watching off and no periodic rescan, so a scan starts only when asked.

One round: the file (random bytes, made once, hard-linked in) is placed in the sender's
folder; then, timed, POST /rest/db/scan on the sender, until the receiver's folder is in
sync again (its StateChanged to idle after it finished the file, checked against
/rest/db/status). Also timed, from the receiver's events: the transfer alone, from its
ItemStarted to its ItemFinished for the file. The file is then deleted on both sides
(the deletion synced too), so the next round finds no copy of its blocks on the
receiver. Use `SyncthingPair` to interleave rounds with another benchmark's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baseline import MB, Unavailable, apt_install, free_port, random_file, stop_pid, vm_hwm_kib

FOLDER = "bench"
EVENTS = "ItemStarted,ItemFinished,StateChanged,RemoteIndexUpdated"


def find_syncthing(install: bool = True) -> tuple[str, str]:
    """The syncthing binary and its version line; installs Debian's when root and
    `install`; raises Unavailable with the reason otherwise."""
    binary = shutil.which("syncthing")
    if binary is None and install:
        why = apt_install("syncthing")
        if why:
            raise Unavailable(f"syncthing is not on PATH and {why}")
        binary = shutil.which("syncthing")
    if binary is None:
        raise Unavailable("syncthing is not on PATH (Debian: apt-get install syncthing)")
    version = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=30
    ).stdout.strip()
    return binary, version


def _when(event: dict[str, Any]) -> float:
    """An event's time (Syncthing's wall clock), as seconds since the epoch."""
    return datetime.fromisoformat(event["time"]).timestamp()


@dataclass
class Transfer:
    """One file moved, with what each part took (seconds)."""

    bytes: int
    seconds: float  # POST /rest/db/scan on the sender until the receiver is in sync
    transfer_seconds: float  # the receiver's ItemStarted until its ItemFinished
    scan_seconds: float  # the scan call on the sender (hashing the file)
    index_seconds: float  # scan start until the receiver has the sender's index update
    item_finished_seconds: float  # scan start until the receiver's ItemFinished
    sender_peak_rss_kib: int  # during the round
    receiver_peak_rss_kib: int

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / MB

    @property
    def transfer_mb_per_s(self) -> float:
        return self.bytes / self.transfer_seconds / MB


class Instance:
    """One syncthing process with its own home, folder, ports and API key."""

    def __init__(self, binary: str, home: Path, name: str) -> None:
        self.binary, self.home, self.name = binary, home, name
        self.folder = home / "folder"
        self.folder.mkdir(parents=True)
        self.port, self.gui = free_port(), free_port()
        self.apikey = f"bench-{name}-{time.time_ns()}"
        self.proc: subprocess.Popen[bytes] | None = None
        env = {"STNODEFAULTFOLDER": "1", "STNOUPGRADE": "1", "HOME": str(home)}
        subprocess.run(
            [binary, "generate", f"--home={home}", "--no-default-folder", "--skip-port-probing"],
            env=env,
            capture_output=True,
            check=True,
            timeout=60,
        )
        self.device_id = subprocess.run(
            [binary, "serve", f"--home={home}", "--device-id"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()
        self.env = env

    def configure(self, other: Instance) -> None:
        """Rewrite the generated config.xml: loopback only, the other device and the folder."""
        path = self.home / "config.xml"
        tree = ET.parse(path)  # noqa: S314  (the file `syncthing generate` just wrote)
        root = tree.getroot()
        for old in root.findall("device") + root.findall("folder"):
            root.remove(old)
        for inst in (self, other):
            device = ET.SubElement(
                root,
                "device",
                id=inst.device_id,
                name=inst.name,
                compression="metadata",
                introducer="false",
            )
            ET.SubElement(device, "address").text = f"tcp://127.0.0.1:{inst.port}"
        folder = ET.SubElement(
            root,
            "folder",
            id=FOLDER,
            label=FOLDER,
            path=str(self.folder),
            type="sendreceive",
            rescanIntervalS="0",  # no periodic scan: only the benchmark's
            fsWatcherEnabled="false",
            ignorePerms="false",
            autoNormalize="true",
        )
        for inst in (self, other):
            ET.SubElement(folder, "device", id=inst.device_id)
        ET.SubElement(folder, "minDiskFree", unit="%").text = "0"
        gui = root.find("gui")
        assert gui is not None
        gui.set("tls", "false")
        _set(gui, "address", f"127.0.0.1:{self.gui}")
        _set(gui, "apikey", self.apikey)
        options = root.find("options")
        assert options is not None
        for key, value in {
            "listenAddress": f"tcp://127.0.0.1:{self.port}",
            "globalAnnounceEnabled": "false",
            "localAnnounceEnabled": "false",
            "relaysEnabled": "false",
            "natEnabled": "false",
            "urAccepted": "-1",  # usage reporting declined
            "crashReportingEnabled": "false",
            "autoUpgradeIntervalH": "0",
            "startBrowser": "false",
            "announceLANAddresses": "false",
            "setLowPriority": "false",  # our daemon runs at normal priority too
            "stunKeepaliveStartS": "0",
            "restartOnWakeup": "false",
        }.items():
            _set(options, key, value)
        tree.write(path)

    def start(self) -> None:
        log = (self.home / "syncthing.log").open("wb")
        self.proc = subprocess.Popen(
            [
                self.binary,
                "serve",
                f"--home={self.home}",
                "--no-browser",
                "--no-restart",  # one process, no monitor: its pid is the one to stop
                "--no-upgrade",
            ],
            # STMONITORED: run as the monitor's inner process, without the monitor (what
            # Syncthing's own IDE debug command does): one process, whose pid we stop
            # and whose memory we read.
            env=dict(self.env, STMONITORED="1"),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc)

    def rest(self, method: str, path: str, timeout: float = 30) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.gui}{path}",
            method=method,
            headers={"X-API-Key": self.apikey},
        )
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 (http://127.0.0.1)
            body = answer.read()
        return json.loads(body) if body.strip() else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def reset_peak_rss(self) -> None:
        """Reset VmHWM to the current resident size (clear_refs 5), so the next read is
        the peak since now."""
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/clear_refs", "w") as f:
            f.write("5")

    def peak_rss_kib(self) -> int:
        assert self.proc is not None
        return vm_hwm_kib(self.proc.pid)


def _set(parent: ET.Element, tag: str, text: str) -> None:
    node = parent.find(tag)
    if node is None:
        node = ET.SubElement(parent, tag)
    node.text = text


class SyncthingPair:
    """Two instances sharing a folder; `transfer(path)` moves one file and times it.

    with SyncthingPair() as pair:
        t = pair.transfer(path)   # a Transfer; call again for more rounds
    """

    def __init__(self, root: Path | None = None, binary: str | None = None) -> None:
        self.binary, self.version = find_syncthing() if binary is None else (binary, binary)
        self._tmp = None if root else tempfile.TemporaryDirectory(prefix="syncthing-bench-")
        self.root = root if root else Path(self._tmp.name)  # type: ignore[union-attr]
        self.sender: Instance | None = None
        self.receiver: Instance | None = None
        self._since = {"a": 0, "b": 0}

    def __enter__(self) -> SyncthingPair:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        a = self.sender = Instance(self.binary, self.root / "a", "a")
        b = self.receiver = Instance(self.binary, self.root / "b", "b")
        a.configure(b)
        b.configure(a)
        a.start()
        b.start()
        for inst in (a, b):
            self._wait(lambda inst=inst: self._ping(inst), 60, f"{inst.name}'s REST API")
        for inst, other in ((a, b), (b, a)):
            self._wait(
                lambda inst=inst, other=other: (
                    inst.rest("GET", "/rest/system/connections")["connections"]
                    .get(other.device_id, {})
                    .get("connected")
                ),
                60,
                f"{inst.name} to connect to {other.name}",
            )
        for inst in (a, b):
            self._wait(lambda inst=inst: self._idle(inst), 60, f"{inst.name}'s folder idle")
            # Subscribe to the events now (a filtered subscription begins at its first
            # request), and remember where they stand.
            events = inst.rest("GET", f"/rest/events?events={EVENTS}&since=0&timeout=0")
            self._since[inst.name] = max((e["id"] for e in events), default=0)

    def close(self) -> None:
        for inst in (self.sender, self.receiver):
            if inst is not None:
                inst.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def transfer(self, source: Path, timeout: float = 600) -> Transfer:
        """Move `source` from the sender to the receiver (timed), then delete it on both
        (not timed)."""
        a, b = self.sender, self.receiver
        assert a is not None
        assert b is not None
        name = source.name
        placed = a.folder / name
        try:
            placed.hardlink_to(source)
        except OSError:
            shutil.copyfile(source, placed)
        size = placed.stat().st_size
        a.reset_peak_rss()
        b.reset_peak_rss()
        began = time.time()  # wall clock, as the events are stamped
        a.rest("POST", f"/rest/db/scan?folder={FOLDER}", timeout=timeout)
        scanned = time.time()
        seen: list[dict[str, Any]] = []
        found = self._events(
            b,
            lambda e: (
                e["type"] == "StateChanged" and e["data"]["to"] == "idle" and _finished(seen, name)
            ),
            seen,
            timeout,
        )
        finished = [e for e in seen if _is(e, "ItemFinished", name)]
        started = [e for e in seen if _is(e, "ItemStarted", name)]
        index = [e for e in seen if e["type"] == "RemoteIndexUpdated"]
        if not finished or finished[-1]["data"]["error"] or not started:
            raise RuntimeError(f"syncthing did not move {name}: {finished[-1:] or 'no item'}")
        status = b.rest("GET", f"/rest/db/status?folder={FOLDER}")
        if status["needBytes"] or status["needFiles"]:
            raise RuntimeError(f"the receiver is idle but still needs {status}")
        got = (b.folder / name).stat().st_size
        if got != size:
            raise RuntimeError(f"the receiver holds {got} B of {size}")
        result = Transfer(
            bytes=size,
            seconds=_when(found) - began,
            transfer_seconds=_when(finished[-1]) - _when(started[0]),
            scan_seconds=scanned - began,
            index_seconds=(_when(index[0]) - began) if index else float("nan"),
            item_finished_seconds=_when(finished[-1]) - began,
            sender_peak_rss_kib=a.peak_rss_kib(),
            receiver_peak_rss_kib=b.peak_rss_kib(),
        )
        self._remove(name, timeout)
        return result

    def _remove(self, name: str, timeout: float) -> None:
        a, b = self.sender, self.receiver
        assert a is not None
        assert b is not None
        (a.folder / name).unlink()
        a.rest("POST", f"/rest/db/scan?folder={FOLDER}", timeout=timeout)
        self._wait(lambda: not (b.folder / name).exists() and self._idle(b), timeout, "deletion")
        for inst in (a, b):  # skip what the deletion stirred up
            events = inst.rest(
                "GET", f"/rest/events?events={EVENTS}&since={self._since[inst.name]}&timeout=0"
            )
            self._since[inst.name] = max((e["id"] for e in events), default=self._since[inst.name])

    def _events(
        self, inst: Instance, until: Any, seen: list[dict[str, Any]], timeout: float
    ) -> dict[str, Any]:
        """Long-poll `inst`'s events, adding each to `seen`, until one satisfies `until`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not inst.alive():
                raise RuntimeError(f"syncthing {inst.name} exited")
            path = f"/rest/events?events={EVENTS}&since={self._since[inst.name]}&timeout=10"
            for event in inst.rest("GET", path, timeout=40):
                self._since[inst.name] = event["id"]
                seen.append(event)
                if until(event):
                    found: dict[str, Any] = event
                    return found
        raise RuntimeError(f"syncthing {inst.name}: no sync after {timeout:.0f} s")

    @staticmethod
    def _ping(inst: Instance) -> bool:
        if not inst.alive():
            raise RuntimeError(f"syncthing {inst.name} exited; see {inst.home}/syncthing.log")
        try:
            return bool(inst.rest("GET", "/rest/system/ping", timeout=5))
        except (OSError, urllib.error.URLError):
            return False

    @staticmethod
    def _idle(inst: Instance) -> bool:
        return bool(inst.rest("GET", f"/rest/db/status?folder={FOLDER}")["state"] == "idle")

    @staticmethod
    def _wait(condition: Any, timeout: float, what: str) -> None:
        """Poll `condition` every 20 ms until true, for at most `timeout` s."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError(f"syncthing: timed out waiting for {what}")
            time.sleep(0.02)


def _is(event: dict[str, Any], kind: str, name: str) -> bool:
    return bool(event["type"] == kind and event["data"].get("item") == name)


def _finished(seen: list[dict[str, Any]], name: str) -> bool:
    return any(_is(e, "ItemFinished", name) for e in seen)


def syncthing_file(
    size: int, rounds: int = 3, source: Path | None = None, root: Path | None = None
) -> dict[str, Any]:
    """Median of `rounds` transfers of a `size`-byte random file (made once in `root` or a
    temporary folder unless `source` is given), as a dict: seconds, MB/s, the rounds."""
    with tempfile.TemporaryDirectory(prefix="syncthing-data-", dir=root) as tmp:
        data = source or random_file(Path(tmp) / f"random-{size}.bin", size)
        with SyncthingPair(Path(tmp) / "pair") as pair:
            done = [pair.transfer(data) for _ in range(rounds)]
            version = pair.version
    seconds = statistics.median(t.seconds for t in done)
    transfer = statistics.median(t.transfer_seconds for t in done)
    return {
        "figure": f"Syncthing, a {size / MB:g} MB file between two instances on loopback",
        "syncthing": version,
        "bytes": size,
        "rounds": len(done),
        "seconds": seconds,  # scan start until the receiver is in sync, median
        "mb_per_s": size / seconds / MB,
        "transfer_seconds": transfer,  # receiver's ItemStarted until ItemFinished, median
        "transfer_mb_per_s": size / transfer / MB,
        "each": [asdict(t) for t in done],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=float, nargs="*", default=[100, 1000], help="MB")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    try:
        results = [syncthing_file(int(mb * MB), args.rounds) for mb in args.size]
    except Unavailable as why:
        print(json.dumps({"skipped": str(why)}))
        sys.exit(0)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)


if __name__ == "__main__":
    main()
