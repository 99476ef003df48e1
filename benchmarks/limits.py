"""What this machine allows: the ceilings the daemon's figures are shares of (issue 13).

    .venv/bin/python benchmarks/limits.py [--json FILE]

Each measured in this process (or, where said, in processes of its own), quickly, as the
median of five repeats of about 0.2 s; the best repeat is in the JSON too:
- Ed25519 verifications/s on one core: libsodium through PyNaCl's crypto_sign_open (the
  call the daemon makes), messages of 330 bytes (a text moment's signed body); and on
  every core at once, one process per core;
- ChaCha20-Poly1305 (IETF) MB/s on one core, PyNaCl, 64 KiB and 256 KiB messages,
  encrypting and decrypting;
- BLAKE2b-256 MB/s on one core (hashlib, as the daemon hashes chunks), 256 KiB pieces;
- loopback TCP MB/s: asyncio streams with both ends in one process (benchmarks/common.py's
  raw_tcp), and raw sockets between two processes (one core each);
- disk write MB/s: 64 MiB to a new file in 512 KiB writes, with direct I/O, through
  the page cache, and through the page cache then synced (issue 22);
- SQLite inserts/s: 10,000 rows like a moment's (a 393-byte envelope, the moments
  table's columns and indexes) in one transaction, WAL, synchronous=FULL, on the disk
  that holds the temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing
import os
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import nacl.bindings as sodium

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import raw_tcp

MB = 1_000_000
KIB = 1024
REPEATS = 5
SIGNED_BODY = 330  # bytes a text moment's signature covers (a 393-byte envelope in all)


def repeat(one: Callable[[], float], repeats: int = REPEATS) -> dict[str, float]:
    """Run `one` (which returns a rate) `repeats` times: the median and the best; and,
    where `one` is `timed`, the median rate per CPU-second of this thread (`cpu`), which
    other processes on a shared machine do not lower."""
    global _cpu_rates
    _cpu_rates = []
    rates = [one() for _ in range(repeats)]
    figures = {"value": statistics.median(rates), "best": max(rates)}
    if len(_cpu_rates) == repeats:
        figures["cpu"] = statistics.median(_cpu_rates)
    return figures


_cpu_rates: list[float] = []


def timed(work: Callable[[], int], seconds: float = 0.2) -> float:
    """Units a second of wall time: call `work` (returning units done) until `seconds`
    have passed. Notes the rate per CPU-second of this thread too."""
    done = 0
    began, cpu = time.perf_counter(), time.thread_time()
    while (elapsed := time.perf_counter() - began) < seconds:
        done += work()
    _cpu_rates.append(done / max(time.thread_time() - cpu, 1e-9))
    return done / elapsed


def _signed(n: int = 256) -> tuple[list[bytes], bytes]:
    public, secret = sodium.crypto_sign_seed_keypair(bytes(range(32)))
    return [sodium.crypto_sign(os.urandom(SIGNED_BODY), secret) for _ in range(n)], public


def ed25519_verify(seconds: float = 0.2) -> float:
    """Verifications a second on this core."""
    signed, public = _signed()

    def batch() -> int:
        for m in signed:
            sodium.crypto_sign_open(m, public)
        return len(signed)

    return timed(batch, seconds)


def _verify_worker(seconds: float, out: Any) -> None:
    out.put(ed25519_verify(seconds))


def ed25519_verify_all_cores(seconds: float = 0.5) -> float:
    """Verifications a second with one process per core, all at once."""
    cores = os.cpu_count() or 1
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_verify_worker, args=(seconds, out)) for _ in range(cores)]
    for p in procs:
        p.start()
    try:
        return float(sum(out.get(timeout=60) for _ in procs))
    finally:
        for p in procs:
            p.join(timeout=30)


def aead(size: int, decrypt: bool, seconds: float = 0.2) -> float:
    """Bytes a second through ChaCha20-Poly1305 (IETF) in messages of `size` bytes."""
    key, nonce, plain = os.urandom(32), bytes(12), os.urandom(size)
    sealed = sodium.crypto_aead_chacha20poly1305_ietf_encrypt(plain, b"", nonce, key)

    def seal() -> int:
        sodium.crypto_aead_chacha20poly1305_ietf_encrypt(plain, b"", nonce, key)
        return size

    def unseal() -> int:
        sodium.crypto_aead_chacha20poly1305_ietf_decrypt(sealed, b"", nonce, key)
        return size

    return timed(unseal if decrypt else seal, seconds)


def blake2b(size: int = 256 * KIB, seconds: float = 0.2) -> float:
    """Bytes a second through BLAKE2b-256 in pieces of `size` bytes."""
    piece = os.urandom(size)

    def one() -> int:
        hashlib.blake2b(piece, digest_size=32, person=b"p2pm-limits").digest()
        return size

    return timed(one, seconds)


def tcp_asyncio(total: int = 200 * MB) -> float:
    """Bytes a second over loopback, asyncio streams, both ends in this process."""
    return asyncio.run(raw_tcp(total, 256 * KIB))


def _sink(port: int, total: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        buf = memoryview(bytearray(1 << 20))
        got = 0
        while got < total:
            n = s.recv_into(buf)
            if not n:
                break
            got += n
        s.sendall(b"k")  # all of it arrived


def tcp_processes(total: int = 1000 * MB) -> float:
    """Bytes a second over loopback between two processes, plain blocking sockets."""
    piece = os.urandom(256 * KIB)
    total = total // len(piece) * len(piece)
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        sink = multiprocessing.get_context("spawn").Process(target=_sink, args=(port, total))
        sink.start()
        try:
            conn, _ = server.accept()
            with conn:
                began = time.perf_counter()
                for _ in range(total // len(piece)):
                    conn.sendall(piece)
                if conn.recv(1) != b"k":
                    raise RuntimeError("the sink did not get everything")
                return total / (time.perf_counter() - began)
        finally:
            sink.join(timeout=30)


def sqlite_inserts(rows: int = 10_000) -> float:
    """Rows a second into a table like the daemon's moments, one transaction, WAL,
    synchronous=FULL."""
    with tempfile.TemporaryDirectory(prefix="limits-sqlite-") as tmp:
        conn = sqlite3.connect(Path(tmp) / "db.sqlite", isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(
                """
                CREATE TABLE moments (
                    moment_id BLOB PRIMARY KEY, circle_id BLOB NOT NULL, author BLOB NOT NULL,
                    seq INTEGER NOT NULL, epoch INTEGER NOT NULL DEFAULT 0,
                    created INTEGER NOT NULL, kind INTEGER NOT NULL, reply_to BLOB,
                    expires INTEGER, retracted INTEGER NOT NULL DEFAULT 0,
                    envelope BLOB NOT NULL, UNIQUE (circle_id, author, seq)
                ) STRICT;
                CREATE INDEX moments_by_circle ON moments (circle_id, created);
                CREATE INDEX moments_by_reply ON moments (reply_to);
                """
            )
            circle, author = os.urandom(32), os.urandom(32)
            data = [
                (os.urandom(32), circle, author, i, 0, 1_700_000_000 + i, 1, os.urandom(393))
                for i in range(rows)
            ]
            began = time.perf_counter()
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO moments (moment_id, circle_id, author, seq, epoch, created, kind,"
                " envelope) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                data,
            )
            conn.execute("COMMIT")
            return rows / (time.perf_counter() - began)
        finally:
            conn.close()


DISK_WRITE = 64 << 20  # bytes a repeat writes, in chunks of 512 KiB (as a chunk is stored)


def disk_write(direct: bool, sync: bool) -> float:
    """Bytes a second written to a new file in the temporary folder's disk, 512 KiB at a
    time: with direct I/O (as the daemon writes chunks and packs, where the file system
    takes it) or through the page cache; then, if `sync`, fsync (counted in the time)."""
    import mmap

    block = 512 << 10
    buf = mmap.mmap(-1, block)  # page-aligned, as direct I/O needs
    buf.write(os.urandom(block))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "w")
        flags = os.O_WRONLY | os.O_CREAT
        try:
            fd = os.open(path, flags | (getattr(os, "O_DIRECT", 0) if direct else 0), 0o600)
        except OSError:
            fd = os.open(path, flags, 0o600)
        try:
            began = time.perf_counter()
            for _ in range(DISK_WRITE // block):
                os.write(fd, buf)
            if sync:
                os.fsync(fd)
            return DISK_WRITE / (time.perf_counter() - began)
        finally:
            os.close(fd)


def limits() -> dict[str, dict[str, Any]]:
    """Every figure: {name: {value, best, cpu (where measured), unit, what}}."""
    out: dict[str, dict[str, Any]] = {}

    def add(name: str, unit: str, what: str, figures: dict[str, float], scale: float) -> None:
        out[name] = {k: v / scale for k, v in figures.items()} | {"unit": unit, "what": what}

    add(
        "ed25519_verify_per_s",
        "/s",
        f"Ed25519 verifications, one core, crypto_sign_open, {SIGNED_BODY}-byte messages",
        repeat(ed25519_verify),
        1,
    )
    cores = os.cpu_count() or 1
    add(
        "ed25519_verify_per_s_all_cores",
        "/s",
        f"Ed25519 verifications, {cores} processes at once",
        repeat(ed25519_verify_all_cores, 3),
        1,
    )
    for size in (64 * KIB, 256 * KIB):
        for decrypt in (False, True):
            verb = "decrypt" if decrypt else "encrypt"
            add(
                f"chacha20poly1305_{verb}_{size // KIB}k_mb_per_s",
                "MB/s",
                f"ChaCha20-Poly1305 IETF {verb}, one core, {size // KIB} KiB messages",
                repeat(partial(aead, size, decrypt)),
                MB,
            )
    add(
        "blake2b_mb_per_s",
        "MB/s",
        "BLAKE2b-256 (hashlib), one core, 256 KiB pieces",
        repeat(blake2b),
        MB,
    )
    add(
        "tcp_asyncio_mb_per_s",
        "MB/s",
        "loopback TCP, asyncio streams, both ends in one process (common.raw_tcp)",
        repeat(tcp_asyncio, 3),
        MB,
    )
    add(
        "tcp_processes_mb_per_s",
        "MB/s",
        "loopback TCP, blocking sockets, sender and receiver in two processes",
        repeat(tcp_processes, 3),
        MB,
    )
    for direct, sync, key, what in (
        (True, False, "disk_write_direct_mb_per_s", "direct I/O, no sync"),
        (False, False, "disk_write_cached_mb_per_s", "through the page cache, no sync"),
        (False, True, "disk_write_cached_sync_mb_per_s", "through the page cache, then fsync"),
    ):
        add(
            key,
            "MB/s",
            f"disk write, 64 MiB in 512 KiB writes, {what}",
            repeat(partial(disk_write, direct, sync), 3),
            MB,
        )
    add(
        "sqlite_inserts_per_s",
        "/s",
        "SQLite inserts of moment-like rows, one transaction, WAL, synchronous=FULL",
        repeat(sqlite_inserts, 3),
        1,
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    figures = limits()
    print(f"{'what (median of wall-clock repeats; best; per CPU-second)':84} {'value':>9}")
    for f in figures.values():
        cpu = f"{f['cpu']:10,.0f}" if "cpu" in f else ""
        print(f"{f['what']:84} {f['value']:9,.0f} {f['best']:9,.0f} {cpu} {f['unit']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
