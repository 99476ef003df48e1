"""Chunk indexes as a hostile member makes them (issue 22, 4), and what a victim's
process and home are measured by: shared by the tests of hostile members and indexes
and benchmarks/costs.py."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from p2pmoments.core.blobs import (
    BIG_CHUNK_SIZE,
    INDEX_PIECE,
    BlobKind,
    BlobRef,
    _index_nonce,
    _size_ad,
    chunk_address,
)
from p2pmoments.core.crypto import Aead, random_bytes

__all__ = ["cpu_seconds", "disk_bytes", "hostile_index", "rss_bytes"]


def hostile_index(pieces: int = 1) -> tuple[BlobRef, bytes, bytes]:
    """A second-form file reference of `pieces` index pieces (up to 128: 1 TiB claimed)
    whose first piece names 16,384 chunks that exist nowhere, and whose later pieces
    exist nowhere either: (reference, first piece's address, first piece). Its author
    serves the first piece, and nothing else."""
    key = random_bytes(32)
    size = pieces * INDEX_PIECE * BIG_CHUNK_SIZE
    plain = b"".join(random_bytes(32) for _ in range(INDEX_PIECE))
    piece = Aead(key).encrypt(_index_nonce(0), _size_ad(size), plain)
    address = chunk_address(piece, 2)
    ref = BlobRef(
        kind=BlobKind.FILE,
        media_type="",
        size=size,
        key=key,
        chunk_size=BIG_CHUNK_SIZE,
        index=(address, *(random_bytes(32) for _ in range(pieces - 1))),
        name="claim.bin",
    )
    return ref, address, piece


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user and system) process `pid` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """Process `pid`'s resident set, measured."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def disk_bytes(home: Path) -> int:
    """Bytes the database's pages in use and the chunk files of a home take (the WAL is
    left out: it is reused, and checkpointed into the database)."""
    total = 0
    for folder, _, files in os.walk(home):
        for name in files:
            path = os.path.join(folder, name)
            if name.endswith(".db"):
                with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                    pages = db.execute("PRAGMA page_count").fetchone()[0]
                    free = db.execute("PRAGMA freelist_count").fetchone()[0]
                    total += (pages - free) * db.execute("PRAGMA page_size").fetchone()[0]
            elif "blobs" in folder:
                with contextlib.suppress(FileNotFoundError):
                    total += os.lstat(path).st_blocks * 512
    return total
