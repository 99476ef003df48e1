"""Issue 13's side-by-side table: our figures beside other programs' and the machine's,
all from this run.

    .venv/bin/python benchmarks/peers.py [--json FILE] [--only file catch-up limits]
        [--sizes 100 1000] [--rounds 3] [--replication bench-results/replication.json]

- file: a file of N MB (random bytes, made once) between two daemon processes, and
  between two Syncthing instances (benchmarks/baseline_syncthing.py), in interleaved
  rounds (ours, theirs, ours, theirs, ...), median of each. Ours is timed from the first
  byte of the upload (the CLI's own streaming upload, `ApiClient.post_multipart`, as
  `p2pmoments post --file` sends it) to the member's transfer.done, and the transfer
  alone from the member's moment.added (since chunks go ahead of their moment, spec/sync.md
  section 4 point 10, that is only what was left to fetch after it); theirs from the
  sender's scan to the receiver in sync, and its transfer alone. Peak resident memory of
  each side's sender and receiver during a round, too.
- catch-up: ssb-server 16.0.1 catching up 10,000 messages by EBT (benchmarks/
  baseline_ssb.py) and ours catching up 10,000 moments (benchmarks/replication.py's
  CatchUp), in interleaved rounds, each timed from the receiver's dial (connect and
  handshake included) to the last one stored; median of each. --replication (the JSON
  replication.py wrote) is only a fallback for ours.
- limits: benchmarks/limits.py, and each of our figures as a share of its ceiling.

A baseline that cannot run here is skipped, and the reason printed. Ratios are ours
over theirs for rates (above 1: we are faster), theirs over ours for memory.

To add a figure: write a function returning a list of `Row`, and call it in `main`;
to time ours differently, replace `OursFile` (a context manager whose `send(path)`
returns a `Sent`) or pass another rate to `catch_up_rows`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from baseline import MB, Unavailable, random_file, vm_hwm_kib
from baseline_ssb import SsbCatchUp
from baseline_syncthing import SyncthingPair, Transfer
from common import daemon_info, p2pm, start, stop, wait
from limits import limits
from replication import CATCH_UP, CatchUp

from p2pmoments.client import ApiCallError, ApiClient
from p2pmoments.paths import resolve_paths


@dataclass
class Row:
    figure: str
    value: float | None  # ours; None: not measured in this run
    baseline: str
    baseline_value: float | None
    ratio: float | None  # see the module's docstring for which way round
    note: str = ""


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    return ours / theirs if ours and theirs else None


# --- ours: a file between two daemon processes ------------------------------------------


class Skip(Exception):
    """Ours cannot do this (yet); the message says why."""


@dataclass
class Sent:
    bytes: int
    seconds: float  # the upload's first byte until the member's transfer.done
    transfer_seconds: float  # the member's moment.added until its transfer.done
    sender_peak_rss_kib: int
    receiver_peak_rss_kib: int


class OursFile:
    """Alice and Bob, two daemon processes on loopback, paired, with a circle "files"."""

    def __init__(self, root: Path) -> None:
        self.alice, self.bob = root / "alice", root / "bob"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.after = 0

    def __enter__(self) -> OursFile:
        p2pm(self.alice, "init", "--name", "Alice")
        p2pm(self.bob, "init", "--name", "Bob")
        self.procs = [start(self.alice), start(self.bob)]
        try:
            for home, proc in zip((self.alice, self.bob), self.procs, strict=True):
                wait(lambda home=home, proc=proc: daemon_info(home, proc.pid))
            p2pm(self.bob, "pair", p2pm(self.alice, "qr", "--link").stdout.strip())
            p2pm(self.alice, "circle", "create", "files", "--member", "Bob")
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

    def close(self) -> None:
        for proc in self.procs:
            stop(proc)
        self.procs = []

    def send(self, path: Path, timeout: float = 600) -> Sent:
        for proc in self.procs:
            with open(f"/proc/{proc.pid}/clear_refs", "w") as f:
                f.write("5")  # VmHWM from now on
        alice = ApiClient(resolve_paths(self.alice))
        began = time.time()  # the clock the daemon stamps its events with
        try:  # the CLI's own upload (p2pmoments post --file), from its first byte
            posted = alice.post_multipart(
                "/moments",
                {"circle": "files", "text": path.name},
                [("file", path.name, path, "application/octet-stream")],
            )
        except ApiCallError as exc:
            raise Skip(f"the post was refused: {exc}") from None
        moment = posted["id"]
        client = ApiClient(resolve_paths(self.bob))
        added = done = None
        deadline = time.monotonic() + timeout
        while done is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"Bob has no transfer.done for {moment} after {timeout} s")
            answer = client.call("GET", f"/events?after={self.after}&timeout=10")
            self.after = answer["last_id"]
            for e in answer["events"]:
                if e["kind"] == "moment.added" and e["data"].get("id") == moment:
                    added = e["time"]
                elif e["kind"] == "transfer.done" and e["data"].get("moment") == moment:
                    done = e["time"]
        if added is None:
            raise RuntimeError(f"Bob's transfer.done for {moment} came without moment.added")
        return Sent(
            bytes=path.stat().st_size,
            seconds=done - began,
            transfer_seconds=done - added,
            sender_peak_rss_kib=vm_hwm_kib(self.procs[0].pid),
            receiver_peak_rss_kib=vm_hwm_kib(self.procs[1].pid),
        )


# --- the figures ---------------------------------------------------------------------------


def file_rows(sizes_mb: list[float], rounds: int, root: Path) -> tuple[list[Row], dict[str, Any]]:
    """Interleaved rounds of ours and Syncthing's for each size."""
    rows: list[Row] = []
    raw: dict[str, Any] = {}
    try:
        pair = SyncthingPair(root / "syncthing")
    except Unavailable as why:
        print(f"skipped, Syncthing: {why}")
        return rows, raw
    print(f"Syncthing: {pair.binary}, {pair.version}")
    raw["syncthing"] = pair.version
    with pair, OursFile(root / "ours") as ours:
        for mb in sizes_mb:
            size = int(mb * MB)
            data = random_file(root / f"random-{size}.bin", size)
            mine: list[Sent] = []
            theirs: list[Transfer] = []
            refused = ""
            for _ in range(rounds):
                if not refused:
                    try:
                        mine.append(ours.send(data))
                    except Skip as why:
                        refused = str(why)
                        print(f"ours, {mb:g} MB: {why}")
                theirs.append(pair.transfer(data))
            data.unlink()
            raw[f"{mb:g} MB"] = {
                "ours": [asdict(s) for s in mine],
                "syncthing": [asdict(t) for t in theirs],
            }
            rows += _file_table(mb, size, mine, theirs, refused)
    return rows, raw


def _file_table(
    mb: float, size: int, mine: list[Sent], theirs: list[Transfer], refused: str
) -> list[Row]:
    def med(xs: list[float]) -> float | None:
        return statistics.median(xs) if xs else None

    def rate(seconds: float | None) -> float | None:
        return size / seconds / MB if seconds else None

    ours_e2e = rate(med([s.seconds for s in mine]))
    ours_xfer = rate(med([s.transfer_seconds for s in mine]))
    st_e2e = rate(med([t.seconds for t in theirs]))
    st_xfer = rate(med([t.transfer_seconds for t in theirs]))
    note = refused or f"median of {len(mine)} interleaved rounds"
    rows = [
        Row(
            f"{mb:g} MB file, post to member's transfer.done, MB/s",
            ours_e2e,
            "Syncthing, scan to receiver in sync",
            st_e2e,
            _ratio(ours_e2e, st_e2e),
            note,
        ),
        Row(
            f"{mb:g} MB file, transfer alone, MB/s",
            ours_xfer,
            "Syncthing, ItemStarted to ItemFinished",
            st_xfer,
            _ratio(ours_xfer, st_xfer),
            note,
        ),
    ]
    for side in ("sender", "receiver"):
        ours_rss = med([getattr(s, f"{side}_peak_rss_kib") / 1024 for s in mine])
        st_rss = med([getattr(t, f"{side}_peak_rss_kib") / 1024 for t in theirs])
        rows.append(
            Row(
                f"{mb:g} MB file, {side}'s peak RSS, MiB (lower is better)",
                ours_rss,
                f"Syncthing {side}'s peak RSS",
                st_rss,
                _ratio(st_rss, ours_rss),
                note,
            )
        )
    return rows


def catch_up_rows(
    rounds: int, root: Path, ours_fallback: float | None = None
) -> tuple[list[Row], dict[str, Any]]:
    """ssb-server's catch-up of 10,000 beside ours (moments/s), in interleaved rounds (ours,
    theirs, ours, theirs, ...), each timed from the receiver's dial to its last message
    held; median of each."""
    try:
        ssb = SsbCatchUp(10_000)
        ssb.__enter__()
    except Unavailable as why:
        print(f"skipped, Scuttlebutt: {why}")
        return [], {}
    try:
        with CatchUp(root / "catch-up") as ours:
            mine, done = [], []
            for _ in range(rounds):
                mine.append(ours.round())
                done.append(ssb.round())
        about = ssb.about
    finally:
        ssb.__exit__(None, None, None)
    print(f"ssb-server {about['ssb_server']} (ssb-ebt {about['ebt']}) on node {about['node']}")
    held = statistics.median(r["held_seconds"] for r in done)
    indexed = statistics.median(r["indexed_seconds"] for r in done)
    theirs = about["messages"] / held
    ours_per_s = CATCH_UP / statistics.median(mine) if mine else ours_fallback
    note = f"median of {len(mine)} interleaved rounds, each from the receiver's dial"
    return [
        Row(
            "catch-up of 10,000, moments/s, dial to last stored",
            ours_per_s,
            f"ssb-server {about['ssb_server']} EBT, dial to last held",
            theirs,
            _ratio(ours_per_s, theirs),
            note,
        ),
        Row(
            "catch-up of 10,000, moments/s, dial to last stored",
            ours_per_s,
            "ssb-server, dial to last indexed",
            about["messages"] / indexed,
            _ratio(ours_per_s, about["messages"] / indexed),
            note,
        ),
    ], {"about": about, "rounds": done, "ours_seconds": mine}


def limit_rows(
    figures: dict[str, dict[str, Any]], ours_file: float | None, ours_catch_up: float | None
) -> list[Row]:
    """The machine's ceilings, with each of our figures as a share of its ceiling."""
    rows = [Row(f["what"], None, "", f["value"], None, f["unit"]) for f in figures.values()]
    pairs = [
        ("catch-up, /s", ours_catch_up, "ed25519_verify_per_s"),
        ("100 MB file, MB/s", ours_file, "chacha20poly1305_encrypt_256k_mb_per_s"),
        ("100 MB file, MB/s", ours_file, "tcp_processes_mb_per_s"),
        ("100 MB file, MB/s", ours_file, "disk_write_direct_mb_per_s"),
        ("100 MB file, MB/s", ours_file, "disk_write_cached_sync_mb_per_s"),
    ]
    for name, ours, key in pairs:
        limit = figures[key]["value"]
        rows.append(Row(f"share: {name}", ours, figures[key]["what"], limit, _ratio(ours, limit)))
    return rows


def ours_catch_up_from(path: Path | None) -> float | None:
    """Our catch-up rate as benchmarks/replication.py wrote it (its JSON)."""
    if path is None or not path.exists():
        return None
    for row in json.loads(path.read_text()):
        if str(row["figure"]).startswith("catch-up, moments/s"):
            return float(row["value"])
    return None


def report(rows: list[Row]) -> None:
    """The table; the machine's limits (rows without a baseline) in a block of their own."""

    def num(x: float | None) -> str:
        return f"{x:10,.2f}" if x is not None else f"{'-':>10}"

    print(f"\n{'figure':56} {'value':>10}   {'baseline':44} {'value':>10} {'ratio':>7}")
    for r in rows:
        if r.baseline:
            ratio = f"{r.ratio:6.2f}×" if r.ratio is not None else f"{'':7}"
            print(
                f"{r.figure[:56]:56} {num(r.value)}   {r.baseline[:44]:44}"
                f" {num(r.baseline_value)} {ratio}  {r.note}"
            )
    limits = [r for r in rows if not r.baseline]
    if limits:
        print("\nwhat this machine allows (benchmarks/limits.py, median of repeats)")
        for r in limits:
            print(f"  {r.figure:86} {num(r.baseline_value)} {r.note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--only", nargs="*", choices=["file", "catch-up", "limits"], default=None)
    parser.add_argument("--sizes", type=float, nargs="*", default=[100, 1000], help="MB")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--replication", type=Path, help="replication.py's JSON, this run")
    args = parser.parse_args()
    chosen = set(args.only or ["file", "catch-up", "limits"])
    rows: list[Row] = []
    raw: dict[str, Any] = {}
    ours_file = None
    ours_catch_up = ours_catch_up_from(args.replication)
    with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
        if "file" in chosen:
            got, raw["file"] = file_rows(args.sizes, args.rounds, Path(tmp))
            rows += got
            ours_file = next(
                (r.value for r in got if r.figure.startswith("100 MB file, post")), None
            )
        if "catch-up" in chosen:
            got, raw["catch-up"] = catch_up_rows(args.rounds, Path(tmp), ours_catch_up)
            rows += got
            ours_catch_up = next((r.value for r in got), ours_catch_up)
    if "limits" in chosen:
        raw["limits"] = limits()
        rows += limit_rows(raw["limits"], ours_file, ours_catch_up)
    report(rows)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": [asdict(r) for r in rows], "raw": raw}, indent=2))


if __name__ == "__main__":
    main()
