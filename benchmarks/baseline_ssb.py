"""Baseline for issue 13: Scuttlebutt catch-up, ssb-server 16.0.1 replicating by EBT.

    .venv/bin/python benchmarks/baseline_ssb.py [--messages 10000] [--rounds 3] [--json FILE]

The harness is in benchmarks/ssb/ (catchup.js drives two peer.js processes, one
ssb-server instance each; see there). Its packages are pinned in package-lock.json,
made from ssb-server 16.0.1's own npm-shrinkwrap.json by make_lock.py, and installed
here with `npm ci` into benchmarks/ssb/node_modules (git-ignored) the first time, and
again whenever the lock or node changes.

What that install needs, and why:
- node and npm, and the npm registry.
- sodium-native 2.4.9 (the shrinkwrap's, which ssb-keys and secret-handshake use through
  chloride) ships no prebuilt binary for node 20, so npm builds it: libsodium with
  autoconf, automake and libtool (apt-get installs them when root), then the addon with
  node-gyp and g++. nan is overridden to 2.30.0 (sodium-native asks for ^2.14.0; the
  shrinkwrap's 2.14.1 does not compile against node 20's V8). node-gyp is pointed at the
  headers node ships (/usr/include/node) instead of downloading them. Without
  sodium-native, chloride falls back to JavaScript crypto: no fair baseline, so the
  harness refuses to run then.
- leveldown 5.6.0 loads its bundled N-API prebuild.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baseline import Unavailable, apt_install, stop_pid

HARNESS = Path(__file__).resolve().parent / "ssb"
STAMP = HARNESS / "node_modules" / ".p2pmoments-installed"


def _tools() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing = " and ".join(n for n, p in (("node", node), ("npm", npm)) if p is None)
        raise Unavailable(f"{missing} not on PATH: the Scuttlebutt baseline needs node 18+ and npm")
    return node, npm


def _stamp(node: str) -> str:
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30)
    lock = (HARNESS / "package-lock.json").read_bytes()
    return f"{hashlib.sha256(lock).hexdigest()} {version.stdout.strip()}"


def ensure_installed(log: IO[str] = sys.stderr) -> str:
    """Install the pinned packages unless already installed; returns node's path.
    Raises Unavailable, saying why, when it cannot."""
    node, npm = _tools()
    stamp = _stamp(node)
    if STAMP.exists() and STAMP.read_text() == stamp:
        return node
    if not (shutil.which("libtoolize") and shutil.which("autoreconf")):
        why = apt_install("autoconf", "automake", "libtool")
        if why:
            raise Unavailable(
                f"building sodium-native 2.4.9 needs autoconf, automake and libtool: {why}"
            )
    for tool in ("make", "g++", "python3"):
        if not shutil.which(tool):
            raise Unavailable(f"building sodium-native 2.4.9 needs {tool}, not on PATH")
    env = dict(os.environ)
    if Path("/usr/include/node/node.h").exists():
        env["npm_config_nodedir"] = "/usr"  # node's own headers; node-gyp would download them
    print("ssb: npm ci in benchmarks/ssb (builds libsodium; a few minutes)", file=log, flush=True)
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(
            [npm, "ci", "--no-audit", "--no-fund", "--foreground-scripts"],
            cwd=HARNESS,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            code = proc.wait(timeout=1800)
        except subprocess.TimeoutExpired:
            stop_pid(proc)
            raise Unavailable("npm ci in benchmarks/ssb did not finish in 30 minutes") from None
        out.seek(0)
        tail = out.read()[-2000:]
    if code != 0:
        raise Unavailable(f"npm ci in benchmarks/ssb failed ({code}): ...{tail}")
    check = subprocess.run(
        [node, "-e", "require('sodium-native'); require('leveldown')"],
        cwd=HARNESS,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check.returncode != 0:
        raise Unavailable(
            "sodium-native or leveldown does not load after npm ci (without sodium-native,"
            f" ssb would fall back to JavaScript crypto): {check.stderr.strip()[-500:]}\n{tail}"
        )
    STAMP.write_text(stamp)
    return node


class SsbCatchUp:
    """Instance A with `messages` posts published; each `round()` starts a fresh, empty
    instance B that follows A and dials it, and returns what B timed, a dict:
    connect_seconds (dial until connected, secret handshake included), held_seconds (dial
    until B's log holds A's last message: the figure), indexed_seconds (until B's indexes
    hold it too), cpu_seconds (B's CPU time, dial to indexed), sender_cpu_seconds (A's,
    over the same span), ebt_peers (1: it came by EBT), marks ([sequence, seconds] at
    the 1st, 100th and every 1000th message held).

        with SsbCatchUp(10_000) as ssb:
            r = ssb.round()    # interleave with other benchmarks' rounds
    """

    def __init__(self, messages: int = 10_000, timeout: float = 300) -> None:
        self.messages, self.timeout = messages, timeout
        self.about: dict[str, Any] = {}
        self.proc: subprocess.Popen[str] | None = None
        self._stderr: IO[str] | None = None
        self._lines: queue.Queue[str] = queue.Queue()

    def __enter__(self) -> SsbCatchUp:
        node = ensure_installed()
        self._stderr = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            [
                node,
                str(HARNESS / "catchup.js"),
                "--messages",
                str(self.messages),
                "--timeout",
                str(self.timeout),
                "--serve",
                "1",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()
        try:
            self.about = self._answer(self.timeout + 600)  # publishing 10,000 takes ~10 s
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

    def round(self) -> dict[str, Any]:
        assert self.proc is not None
        assert self.proc.stdin is not None
        self.proc.stdin.write("round\n")
        self.proc.stdin.flush()
        return self._answer(self.timeout + 180)

    def _read(self, stdout: IO[str]) -> None:
        for line in stdout:
            self._lines.put(line)
        self._lines.put("")

    def _answer(self, timeout: float) -> dict[str, Any]:
        """The harness's next JSON line, waiting at most `timeout` s."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"the ssb harness said nothing in {timeout:.0f} s") from None
        if not line:
            assert self._stderr is not None
            self._stderr.seek(0)
            raise RuntimeError(f"the ssb harness stopped: {self._stderr.read()[-2000:]}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.stdin is not None and not self.proc.stdin.closed:
                self.proc.stdin.close()  # the harness closes both instances and exits
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                stop_pid(self.proc)
            self.proc = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


def ssb_catch_up(messages: int = 10_000, rounds: int = 3, timeout: float = 300) -> dict[str, Any]:
    """Median of `rounds` catch-ups of `messages` messages, as a dict: seconds (dial to
    B holding the last message), messages/s, the rounds, the versions."""
    with SsbCatchUp(messages, timeout) as ssb:
        done = [ssb.round() for _ in range(rounds)]
        about = ssb.about
    seconds = statistics.median(r["held_seconds"] for r in done)
    return {
        "figure": f"ssb-server {about['ssb_server']} catch-up by EBT, {messages} messages",
        **about,
        "rounds": done,
        "seconds": seconds,  # B's dial until B holds message `messages`, median
        "messages_per_second": messages / seconds,
        "indexed_seconds": statistics.median(r["indexed_seconds"] for r in done),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    try:
        result = ssb_catch_up(args.messages, args.rounds)
    except Unavailable as why:
        print(json.dumps({"skipped": str(why)}))
        sys.exit(0)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)


if __name__ == "__main__":
    main()
