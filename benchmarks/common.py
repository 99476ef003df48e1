"""What the benchmark scripts share: daemon processes, waiting, memory, the table."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

Row = tuple[str, float, str, float]


def p2pm(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the CLI on a home."""
    return subprocess.run(
        [sys.executable, "-m", "p2pmoments", "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
    )


def start(home: Path, *extra: str, log: Path | None = None) -> subprocess.Popen[bytes]:
    """A daemon on loopback, quiet, without mDNS; `extra` may set --listen (and a second
    --log-level); `log`: where its output goes (else P2PM_LOG_DIR, else nowhere)."""
    listen = [] if "--listen" in extra else ["--listen", "127.0.0.1:0"]
    profile = os.environ.get("P2PM_PROFILE_DIR")  # cProfile each daemon into this folder
    wrap = ["-m", "cProfile", "-o", f"{profile}/{home.name}.prof"] if profile else []
    return subprocess.Popen(
        [
            sys.executable,
            *wrap,
            "-m",
            "p2pmoments",
            "--home",
            str(home),
            "run",
            *listen,
            "--api",
            "127.0.0.1:0",
            "--no-mdns",
            "--no-tor",
            "--log-level",
            os.environ.get("P2PM_LOG_LEVEL", "warning"),
            *extra,
        ],
        stdout=log.open("w")
        if log is not None
        else open(os.environ["P2PM_LOG_DIR"] + f"/{home.name}.log", "w")
        if os.environ.get("P2PM_LOG_DIR")
        else subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def log_file(home: Path) -> IO[str] | int:
    """Where a daemon's log goes: P2PM_LOG_DIR/<home>.log if that is set (with
    P2PM_LOG_LEVEL, e.g. debug, to see what it did), else nowhere."""
    folder = os.environ.get("P2PM_LOG_DIR")
    if not folder:
        return subprocess.DEVNULL
    return (Path(folder) / f"{home.name}.log").open("w")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM by pid, and wait."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def wait(condition: Callable[[], object], timeout: float = 60) -> None:
    """Poll until `condition()` is truthy."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(0.002)


def daemon_info(home: Path, pid: int) -> dict[str, object] | None:
    """The running daemon's daemon.json, once that daemon has written it."""
    try:
        info = json.loads((home / "data" / "daemon.json").read_text())
    except (OSError, ValueError):
        return None
    return info if info.get("pid") == pid else None


def rss_kib(pid: int) -> int:
    """Resident memory of a process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def report(rows: Sequence[Row], json_path: Path | None, unit_note: str = "") -> None:
    """Print the table (each figure beside its baseline) and write it as JSON."""
    print(f"{'figure':46} {'value':>10}   {'baseline':32} {'value':>10}{unit_note}")
    for name, value, base_name, base in rows:
        print(f"{name:46} {value:10.2f}   {base_name:32} {base:10.2f}")
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        keys = ("figure", "value", "baseline", "baseline_value")
        json_path.write_text(json.dumps([dict(zip(keys, r, strict=True)) for r in rows], indent=2))


async def raw_tcp(total: int, write_size: int) -> float:
    """Bytes a second over loopback TCP alone, both ends in this process."""
    import asyncio

    done, finished = asyncio.Event(), asyncio.Event()
    total = total // write_size * write_size  # whole writes, so the sink sees it all
    received = 0

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        while data := await reader.read(1 << 20):
            received += len(data)
            if received >= total:
                done.set()
        writer.close()
        finished.set()

    server = await asyncio.start_server(sink, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    chunk = b"x" * write_size
    began = time.perf_counter()
    for _ in range(total // write_size):
        writer.write(chunk)
        await writer.drain()
    await done.wait()
    seconds = time.perf_counter() - began
    writer.close()
    await finished.wait()
    server.close()
    return total / seconds


def cipher(total: int) -> float:
    """Bytes a second through ChaCha20-Poly1305 alone, in link-sized frames."""
    from p2pmoments.core.crypto import aead_encrypt

    key, block = bytes(32), b"x" * 65519  # the link's largest frame
    n = total // len(block)
    began = time.perf_counter()
    for i in range(n):
        aead_encrypt(key, i, b"", block)
    return n * len(block) / (time.perf_counter() - began)
