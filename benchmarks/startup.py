"""Start-up time until /api/v1/health answers, and idle resident memory.

Baselines from the same run: the time for the bare interpreter to start
(`python -c pass`) and to import aiohttp, and the resident memory of a bare
asyncio process idling, so the figures show what p2pmoments itself adds.

    .venv/bin/python benchmarks/startup.py [--runs N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

RUNS = 10
IDLE_SECONDS = 3.0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def timed_command(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, check=True, timeout=60)
    return time.perf_counter() - start


def start_daemon(home: Path) -> tuple[subprocess.Popen[bytes], float]:
    start = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "p2pmoments",
            "--home",
            str(home),
            "run",
            "--listen",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
            "--no-mdns",
            "--log-level",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = start + 60
    while time.perf_counter() < deadline:
        try:
            info = json.loads((home / "data" / "daemon.json").read_text())
            if info["pid"] == proc.pid:
                url = info["api_url"] + "/health"  # our own loopback API
                with urllib.request.urlopen(url, timeout=5):  # noqa: S310
                    return proc, time.perf_counter() - start
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.002)
    proc.kill()
    raise RuntimeError("daemon did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        subprocess.run(
            [sys.executable, "-m", "p2pmoments", "--home", str(home), "init", "--name", "Bench"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        starts, rss = [], []
        for _ in range(args.runs):
            proc, seconds = start_daemon(home)
            starts.append(seconds)
            time.sleep(IDLE_SECONDS)  # measuring idle memory: idling is the point here
            rss.append(rss_kib(proc.pid))
            stop(proc)

        bare = [timed_command([sys.executable, "-c", "pass"]) for _ in range(args.runs)]
        aiohttp_import = [
            timed_command([sys.executable, "-c", "import aiohttp.web"]) for _ in range(args.runs)
        ]
        idle = subprocess.Popen(
            [sys.executable, "-c", "import asyncio, aiohttp.web; asyncio.run(asyncio.sleep(60))"]
        )
        time.sleep(IDLE_SECONDS)
        idle_rss = rss_kib(idle.pid)
        idle.kill()
        idle.wait()

    rows = [
        (
            "start until /health answers (median, ms)",
            statistics.median(starts) * 1000,
            "python -c pass",
            statistics.median(bare) * 1000,
        ),
        (
            "start until /health answers (max, ms)",
            max(starts) * 1000,
            "python -c 'import aiohttp.web'",
            statistics.median(aiohttp_import) * 1000,
        ),
        (
            "idle resident memory (median, MiB)",
            statistics.median(rss) / 1024,
            "asyncio + aiohttp idle",
            idle_rss / 1024,
        ),
    ]
    print(f"{'figure':44} {'p2pmoments':>11}   {'baseline':32} {'value':>8}")
    for name, value, base_name, base in rows:
        print(f"{name:44} {value:11.1f}   {base_name:32} {base:8.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                [
                    {"figure": r[0], "value": r[1], "baseline": r[2], "baseline_value": r[3]}
                    for r in rows
                ],
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
