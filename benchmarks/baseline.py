"""What the baselines (other programs run beside ours) share: finding or installing them,
free loopback ports, stopping what they started by pid, a file of random bytes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

MB = 1_000_000


class Unavailable(Exception):
    """A baseline that cannot run on this machine; the message says why."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_pid(proc: subprocess.Popen[Any], timeout: float = 30) -> None:
    """SIGTERM by pid and wait; SIGKILL by pid if it has not gone after `timeout` s."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def apt_install(*packages: str, timeout: float = 600) -> str | None:
    """Install Debian packages when root; None when done, else why it could not."""
    if os.geteuid() != 0:
        return f"not root, so cannot apt-get install {' '.join(packages)}"
    if not shutil.which("apt-get"):
        return "no apt-get on this machine"
    cmd = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "-q", *packages]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:  # perhaps the package lists were never fetched
            subprocess.run(
                ["apt-get", "-o", "DPkg::Lock::Timeout=300", "update", "-q"],
                env=env,
                capture_output=True,
                timeout=timeout,
            )
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"apt-get install {' '.join(packages)} did not finish in {timeout:.0f} s"
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
        return f"apt-get install {' '.join(packages)} failed: {' '.join(tail)}"
    return None


def random_file(path: Path, size: int) -> Path:
    """`size` random bytes at `path`, written in 16 MiB pieces (made once, then reused:
    a file already of that size is kept)."""
    if path.exists() and path.stat().st_size == size:
        return path
    piece = 16 << 20
    with path.open("wb") as f:
        left = size
        while left:
            n = min(piece, left)
            f.write(os.urandom(n))
            left -= n
    return path


def vm_hwm_kib(pid: int) -> int:
    """Peak resident memory of a process so far (VmHWM), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")
