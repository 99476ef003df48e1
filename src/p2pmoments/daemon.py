"""Running the daemon in the foreground: lock, node, control API, signals.

SIGINT and SIGTERM stop it cleanly: the API stops taking requests, in-flight
ones finish, the store checkpoints and closes, daemon.json is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import gc
import logging
import os
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from aiohttp import web

from p2pmoments.api import API_PREFIX, ApiRunner, create_app
from p2pmoments.config import Address, Config
from p2pmoments.core.errors import P2PMomentsError
from p2pmoments.home import load_device, load_identity, load_or_create_token
from p2pmoments.limits import AcceptGuard, raise_open_files_limit
from p2pmoments.net.links import describe_bind_error
from p2pmoments.node import Node, Profile
from p2pmoments.paths import Paths
from p2pmoments.runinfo import DaemonInfo, read_daemon_info, write_daemon_info

__all__ = ["AlreadyRunningError", "DaemonInfo", "read_daemon_info", "run_daemon", "serve"]

log = logging.getLogger(__name__)


class AlreadyRunningError(P2PMomentsError):
    """Another daemon holds this home."""


@contextlib.contextmanager
def _home_lock(paths: Paths) -> Iterator[None]:
    paths.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(paths.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = read_daemon_info(paths)
            who = f" (pid {info.pid}, API {info.api_url})" if info else ""
            raise AlreadyRunningError(
                f"a daemon is already running on {paths.data_dir}{who}"
            ) from None
        yield
    finally:
        os.close(fd)  # closing releases the lock


async def serve(
    paths: Paths,
    config: Config,
    *,
    stop: asyncio.Event,
    on_ready: Callable[[DaemonInfo, Profile], None] = lambda info, profile: None,
) -> None:
    """Run the node and its API until `stop` is set."""
    identity = await asyncio.to_thread(load_identity, paths)
    token = await asyncio.to_thread(load_or_create_token, paths)
    device = await asyncio.to_thread(load_device, paths)
    person = device.person if device is not None else None
    async with Node(paths=paths, config=config, identity=identity, person=person) as node:
        runner = ApiRunner(create_app(node, token), access_log=None, shutdown_timeout=5)
        await runner.setup()
        try:
            site = web.TCPSite(runner, config.api_listen.host, config.api_listen.port)
            try:
                await site.start()
            except OSError as exc:
                raise describe_bind_error("for the control API", config.api_listen, exc) from None
            host, port = runner.addresses[0][:2]
            node.api_url = f"http://{Address(host=host, port=port)}{API_PREFIX}"
            info = DaemonInfo(
                pid=os.getpid(), api_url=node.api_url, listen=node.links.listen_addresses
            )
            await asyncio.to_thread(write_daemon_info, paths, info)
            try:
                on_ready(info, await node.profile())
                await stop.wait()
                log.info("stopping")
            finally:
                with contextlib.suppress(FileNotFoundError):
                    paths.daemon_file.unlink()
        finally:
            await runner.cleanup()


def command_name() -> str:
    """How to invoke this program again: `p2pmoments` if that is on PATH, else its path."""
    argv0 = sys.argv[0]
    if Path(argv0).name == "p2pmoments":
        on_path = shutil.which("p2pmoments")
        if on_path and Path(on_path).resolve() == Path(argv0).resolve():
            return "p2pmoments"
        return argv0
    return f"{Path(sys.executable).name} -m p2pmoments"


def _print_banner(out: TextIO, paths: Paths, profile: Profile, info: DaemonInfo) -> None:
    home = f" --home {paths.home}" if paths.home is not None else ""
    print(
        f"p2pmoments is running as {profile.name} ({profile.identity})\n"
        f"  peers:        {', '.join(info.listen)}\n"
        f"  control API:  {info.api_url}\n"
        f"  token file:   {paths.token_file}\n"
        f"  web app:      {command_name()}{home} open    (--print for a login link)\n"
        f"  try:          {command_name()}{home} status\n"
        "Press Ctrl-C to stop.",
        file=out,
        flush=True,
    )


def _glibc(name: str, restype: type, *argtypes: type) -> Any | None:
    """The C library's function `name`, typed; None where it has none (not glibc)."""
    try:
        function = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    function.argtypes, function.restype = list(argtypes), restype
    return function


M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD = 4 * 1024 * 1024
TRIM_THRESHOLD = 8 * 1024 * 1024
ARENA_MAX = 2  # heaps the threads share (glibc's default: 8 a core)


def return_large_buffers() -> bool:
    """Have glibc give large buffers (uploads, chunks, decoded photos) back to the system
    as soon as they are freed; True if it could be set.

    By default glibc raises its mmap threshold up to 32 MiB after the first large free,
    and from then on such buffers are taken from and freed into per-thread arenas, where
    they stay: under benchmarks/memory.py the daemon then peaked at 1.0 to 1.15 GB
    instead of 0.65 GB. A fixed threshold keeps the ceiling README.md states.

    And the worker threads share two heaps (ARENA_MAX) instead of taking up to eight a
    core, each keeping what its thread once held: over the 30-minute chaos soak (seed
    2530104138) the daemon never restarted grew 95 -> 130 MB (+37 %) with glibc's
    default, and 101 -> 107 MB (+6 %) with two; the memory benchmark's peak was the
    same (590 MB) either way."""
    mallopt = _glibc("mallopt", ctypes.c_int, ctypes.c_int, ctypes.c_int)
    if mallopt is None:
        return False
    return all(
        mallopt(param, value)
        for param, value in (
            (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (M_ARENA_MAX, ARENA_MAX),
        )
    )


TRIM_EVERY = 60.0  # seconds between two heap trims


def trim_heap() -> bool:
    """Give the memory freed since the last trim back to the system (glibc's
    malloc_trim(0), a few milliseconds); False where there is no glibc.

    Buffers under the mmap threshold (chunks, ranges, decoded photos: 1 to 4 MiB) freed
    in worker threads stay in those threads' arenas, which glibc never trims on its own
    (tests/test_heap_trim.py: 146 MB kept, and given back by a trim). It was not the
    whole of the chaos soak's growth: the heaps the threads share are (ARENA_MAX)."""
    malloc_trim = _glibc("malloc_trim", ctypes.c_int, ctypes.c_size_t)
    if malloc_trim is None:
        return False
    malloc_trim(0)
    return True


async def trim_heap_forever(stop: asyncio.Event) -> None:
    """Trim the heap every TRIM_EVERY seconds until `stop` is set."""
    while True:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(TRIM_EVERY):
                await stop.wait()
        # Off the loop: it takes a few milliseconds.
        if stop.is_set() or not await asyncio.to_thread(trim_heap):
            return


GC_THRESHOLDS = (20_000, 20, 20)  # allocations before a young collection, and so on


def settle_garbage_collector() -> None:
    """Once the daemon is up: what start-up made (modules, the app, the parts) is moved
    out of the collector's sight (gc.freeze), and collections come less often. A
    catch-up makes tens of thousands of short-lived objects; with Python's defaults the
    collector scanned everything start-up left on every full collection (3 % of the
    receiving daemon's time)."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run_daemon(paths: Paths, config: Config, *, out: TextIO = sys.stdout) -> None:
    """Run in the foreground until SIGINT or SIGTERM; raises P2PMomentsError on failure."""
    load_identity(paths)  # fail early and clearly if not initialised
    return_large_buffers()
    open_files = raise_open_files_limit()
    with _home_lock(paths):

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)

            def ready(info: DaemonInfo, profile: Profile) -> None:
                settle_garbage_collector()
                log.info(
                    "ready: API %s, peers %s, up to %d open files",
                    info.api_url,
                    ", ".join(info.listen),
                    open_files,
                )
                _print_banner(out, paths, profile, info)

            trimmer = asyncio.create_task(trim_heap_forever(stop), name="heap trim")
            try:
                with AcceptGuard(loop):
                    await serve(paths, config, stop=stop, on_ready=ready)
            finally:
                stop.set()  # the trimmer ends with the daemon
                await trimmer

        asyncio.run(main())
