"""Start-up time until /api/v1/health answers, idle resident memory, and how long a CLI
command takes against a running daemon (`p2pmoments status`, target 150 ms).

Baselines from the same run: the time for the bare interpreter to start
(`python -c pass`) and to import aiohttp, and the resident memory of a bare
asyncio process idling, so the figures show what p2pmoments itself adds.

    .venv/bin/python benchmarks/startup.py [--runs N] [--json FILE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import daemon_info, p2pm, report, rss_kib, start, stop, wait

RUNS = 10
IDLE_SECONDS = 3.0


# As an installed program runs: with its bytecode cached (this sandbox may set
# PYTHONDONTWRITEBYTECODE, which would make every run compile the CLI's modules again).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed_command(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, check=True, timeout=60, stdout=subprocess.DEVNULL, env=ENV)
    return time.perf_counter() - start


def start_daemon(home: Path) -> tuple[subprocess.Popen[bytes], float]:
    began = time.perf_counter()
    proc = start(home)

    def healthy() -> bool:
        info = daemon_info(home, proc.pid)
        if info is None:
            return False
        try:
            url = f"{info['api_url']}/health"  # our own loopback API
            with urllib.request.urlopen(url, timeout=5):  # noqa: S310
                return True
        except OSError:
            return False

    wait(healthy)
    return proc, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        p2pm(home, "init", "--name", "Bench")
        starts, rss, status = [], [], []
        cli = [str(Path(sys.executable).parent / "p2pmoments"), "--home", str(home), "status"]
        for _ in range(args.runs):
            proc, seconds = start_daemon(home)
            starts.append(seconds)
            time.sleep(IDLE_SECONDS)  # measuring idle memory: idling is the point here
            rss.append(rss_kib(proc.pid))
            timed_command(cli)  # the first run writes the bytecode, as an install does
            status.append(timed_command(cli))
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
            "p2pmoments status (median, ms; target 150)",
            statistics.median(status) * 1000,
            "python -c pass",
            statistics.median(bare) * 1000,
        ),
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
    report(rows, args.json)


if __name__ == "__main__":
    main()
