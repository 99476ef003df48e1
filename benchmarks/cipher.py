"""Would the link's cipher gain from a worker thread? (issue 22), each figure beside its
baseline measured in the same run.

    .venv/bin/python benchmarks/cipher.py [--json FILE] [--mb 100]

The link encrypts every 64 KiB frame with ChaCha20-Poly1305 on the event loop. Doing it
on a worker thread instead frees the loop only if the cipher releases the GIL while it
works, and costs the machine more CPU if the library that does is slower:

- CPU seconds per N MB of link frames: the link's cipher (cryptography, OpenSSL) beside
  libsodium's (pynacl's bindings, which release the GIL);
- parallelism: the wall time of two threads each doing that work, over one thread's
  (1.0: they ran side by side; 2.0 or more: one at a time, the GIL held), for each. It
  means something only on an idle machine (load average below the cores): printed.

On the 2-core machine of issue 22 (2026-12, load 5-7 from other work): OpenSSL did 100 MB
of frames in 0.05-0.07 CPU-s holding the GIL (two threads took 3.6x one's wall at load
5.3), libsodium in 0.09-0.13 CPU-s without it (two threads 0.93x one's). A worker thread
per link would either free nothing of the loop (OpenSSL) or free its 0.05 s per 100 MB
per side for 0.04-0.08 CPU-s more (libsodium), on a machine where wall time follows CPU:
no gain to expect, so the link keeps its cipher on the loop.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import nacl.bindings
from common import Row, report

from p2pmoments.core.crypto import Aead
from p2pmoments.core.link import MAX_PLAINTEXT

MB = 1_000_000


def _frames(total: int) -> int:
    return max(1, total // MAX_PLAINTEXT)


def openssl(frames: int) -> Callable[[], None]:
    """The link's own cipher (core.crypto.Aead), frame after frame."""
    aead, block = Aead(os.urandom(32)), os.urandom(MAX_PLAINTEXT)

    def run() -> None:
        for i in range(frames):
            aead.encrypt_counter(i, b"", block)

    return run


def libsodium(frames: int) -> Callable[[], None]:
    """The same frames through libsodium's ChaCha20-Poly1305 (IETF)."""
    key, block = os.urandom(32), os.urandom(MAX_PLAINTEXT)
    encrypt = nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt

    def run() -> None:
        for i in range(frames):
            encrypt(block, b"", i.to_bytes(12, "little"), key)

    return run


def cpu_seconds(work: Callable[[], None]) -> float:
    began = time.process_time()
    work()
    return time.process_time() - began


def wall(work: Callable[[], None], threads: int) -> float:
    workers = [threading.Thread(target=work) for _ in range(threads)]
    began = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=600)
    return time.perf_counter() - began


def best(measure: Callable[[], float], rounds: int = 3) -> float:
    return min(measure() for _ in range(rounds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--mb", type=float, default=100.0)
    args = parser.parse_args()
    frames = _frames(int(args.mb * MB))
    ours, theirs = openssl(frames), libsodium(frames)
    rows: list[Row] = [
        (
            f"link cipher (OpenSSL), CPU-s per {args.mb:g} MB",
            best(lambda: cpu_seconds(ours)),
            "libsodium (releases the GIL)",
            best(lambda: cpu_seconds(theirs)),
        ),
        (
            "OpenSSL: 2 threads' wall / 1 thread's",
            best(lambda: wall(ours, 2)) / best(lambda: wall(ours, 1)),
            "libsodium: 2 threads' / 1's",
            best(lambda: wall(theirs, 2)) / best(lambda: wall(theirs, 1)),
        ),
    ]
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores")
    report(rows, args.json)


if __name__ == "__main__":
    main()
