"""Real daemon processes for tests: started with --home in a temporary directory,
driven through the CLI, always stopped by their process id."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
# No Tor unless a test asks for it (Daemon(tor=True), with a private network's torrc
# lines in the config): a tor of our own would try the public network.
LOOPBACK_ARGS = ("--listen", "127.0.0.1:0", "--api", "127.0.0.1:0", "--no-tor", "--no-mdns")
START_TIMEOUT = 30.0


def wait_for(condition: Callable[[], T | None], *, timeout: float, what: str) -> T:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def cli(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `p2pmoments --home HOME ARGS...` and return what it did."""
    return subprocess.run(
        [sys.executable, "-m", "p2pmoments", "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "P2PMOMENTS_HOME": ""},
    )


class Daemon:
    """One `p2pmoments run` process."""

    def __init__(
        self,
        home: Path,
        *extra: str,
        mdns: bool = False,
        tor: bool = False,
        prefix: list[str] | None = None,
        module: str = "p2pmoments",
        env: dict[str, str] | None = None,
    ) -> None:
        self.home = home
        self.log = home.parent / f"{home.name}-daemon-{time.monotonic_ns()}.log"
        self._log_file = self.log.open("w")
        self.proc = subprocess.Popen(
            [
                *(prefix or []),
                sys.executable,
                "-m",
                module,
                "--home",
                str(home),
                "run",
                *(
                    a
                    for a in LOOPBACK_ARGS
                    if not (mdns and a == "--no-mdns") and not (tor and a == "--no-tor")
                ),
                *extra,
            ],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.info: dict[str, Any] = {}

    @property
    def output(self) -> str:
        return self.log.read_text()

    def _ready(self) -> dict[str, Any] | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.output}")
        try:
            info = json.loads((self.home / "data" / "daemon.json").read_text())
        except (OSError, ValueError):
            return None
        if info.get("pid") != self.proc.pid:
            return None
        return info if self._health(info["api_url"] + "/health") else None

    def _health(self, url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def wait_ready(self, timeout: float = START_TIMEOUT) -> dict[str, Any]:
        self.info = wait_for(self._ready, timeout=timeout, what="the daemon to answer /health")
        return self.info

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        token = (self.home / "data" / "api.token").read_text().strip()
        request = urllib.request.Request(
            self.info["api_url"] + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30) -> int:
        """Send `sig` to the daemon's pid and return its exit status."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self._log_file.close()


def start_daemon(started: list[Daemon], home: Path, *extra: str) -> Daemon:
    """Start a daemon, record it for the `daemons` fixture to stop, wait until it answers."""
    daemon = Daemon(home, *extra)
    started.append(daemon)
    daemon.wait_ready()
    return daemon
