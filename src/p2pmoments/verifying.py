"""Checking many signatures at once in processes of their own (issue 13: a catch-up).

A daemon catching up receives thousands of moments a second. Checking their Ed25519
signatures on threads works in parallel only in part: each check hands Python's lock
back and waits for it again, while the thread storing what was checked holds it. A
batch's checks are therefore split among WORKERS worker processes, one a core up to two
(started when a peer's have says a big batch is coming, or when the first big batch
comes; stopped once idle for IDLE seconds), and come
back as one byte each; the envelopes are read and decrypted meanwhile. Two rather than
one: a catch-up of 10,000 took 7.64 s against 8.37 s (median of 4 interleaved rounds on
this 2-core machine shared at a load of 16; issue 22). A small batch is checked on a
thread, as before: a process costs a round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from p2pmoments.core.crypto import verify_many

__all__ = ["IDLE", "PROCESS_BATCH", "PROCESS_MIN", "WORKERS", "Verifier"]

log = logging.getLogger(__name__)

PROCESS_BATCH = 256  # a batch of envelopes this big is opened with the worker process
PROCESS_MIN = 64  # fewer checks than this are done on a thread (a process costs a round trip)
IDLE = 60.0  # seconds without a batch before the worker process is stopped
WORKERS = max(1, min(2, os.cpu_count() or 1))  # processes; a big batch is split among them

Check = tuple[bytes, bytes, bytes]  # (Ed25519 key, signature, message)


def _start_processes(pool: ProcessPoolExecutor) -> None:
    """Each process starts, and loads what checking needs, on its first job."""
    with contextlib.suppress(RuntimeError):  # shut down meanwhile, or broken
        for _ in range(WORKERS):
            pool.submit(verify_many, ())


class Verifier:
    """Checks batches of signatures: big ones in worker processes, small ones on a
    thread. close() stops the processes; safe to call twice."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._busy = 0
        self._closed = False
        self._starting = asyncio.Lock()
        self._warmed: ProcessPoolExecutor | None = None  # the pool whose processes started
        self.batches = 0  # sent to the process (statistics)

    async def warm(self) -> None:
        """A big batch is coming (a peer's have says how far behind we are): start the
        worker processes now, not when its first piece is to be checked. Returns once
        they are starting; they stop again after IDLE seconds without a batch."""
        pool = await self._pool_started()
        if pool is None:
            return
        if self._busy == 0 and self._idle is None:
            self._idle = asyncio.get_running_loop().call_later(IDLE, self._stop_idle)
        if self._warmed is not pool:
            self._warmed = pool
            await asyncio.to_thread(_start_processes, pool)

    async def _pool_started(self) -> ProcessPoolExecutor | None:
        """The pool, made if need be; None once closed."""
        async with self._starting:
            if self._pool is None and not self._closed:
                # spawn: the daemon has threads, which fork does not copy safely. Made on a
                # thread: making its queues writes to multiprocessing's resource tracker.
                pool = await asyncio.to_thread(
                    ProcessPoolExecutor, WORKERS, mp_context=multiprocessing.get_context("spawn")
                )
                if self._closed:  # closed meanwhile: no process may outlive close()
                    await asyncio.to_thread(pool.shutdown, True)
                    return None
                self._pool = pool
            return self._pool

    async def verify(self, checks: Sequence[Check]) -> bytes:
        """One byte per check: 1 if the signature holds."""
        if len(checks) < PROCESS_MIN or self._closed:
            return await asyncio.to_thread(verify_many, checks)
        loop = asyncio.get_running_loop()
        pool = await self._pool_started()
        if pool is None:
            return await asyncio.to_thread(verify_many, checks)
        self._warmed = pool
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self._busy += 1
        try:
            # Submitting starts the process the first time, and writes to a pipe: never on
            # the event loop.
            size = -(-len(checks) // WORKERS)
            parts = [list(checks[i : i + size]) for i in range(0, len(checks), size)]
            done = await asyncio.to_thread(
                lambda: [pool.submit(verify_many, part) for part in parts]
            )
            results = await asyncio.gather(*map(asyncio.wrap_future, done))
            self.batches += 1
            return b"".join(results)
        except BrokenProcessPool:  # the worker died (killed, out of memory): on a thread
            log.warning("the signature-checking process stopped; checking on a thread")
            if self._pool is pool:
                self._pool = None
            return await asyncio.to_thread(verify_many, checks)
        finally:
            self._busy -= 1
            if not self._busy and self._pool is not None and not self._closed:
                self._idle = loop.call_later(IDLE, self._stop_idle)

    def _stop_idle(self) -> None:
        self._idle = None
        pool, self._pool = self._pool, None
        if pool is not None and not self._busy:
            pool.shutdown(wait=False)  # its process exits once it has nothing to do
        elif pool is not None:
            self._pool = pool

    async def close(self) -> None:
        """Stop the worker process, if one runs; safe to call twice."""
        self._closed = True
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, True, cancel_futures=True)
