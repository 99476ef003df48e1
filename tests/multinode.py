"""Several nodes in one process, over loopback."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image

from p2pmoments.config import Address, Config
from p2pmoments.core.pairing import decode_code, encode_code
from p2pmoments.home import init_home
from p2pmoments.node import Node
from p2pmoments.paths import resolve_paths

T = TypeVar("T")
TOR_WAIT = 240.0  # onion services on 2 busy cores: seconds, sometimes a minute or two

LOOPBACK = Config(
    listen=Address(host="127.0.0.1", port=0),
    api_listen=Address(host="127.0.0.1", port=0),
    mdns=False,
    tor="off",  # never the public Tor network; tests/test_tor_daemons.py turns it on
)


async def make_home(root: Path, name: str) -> Path:
    """An initialised home (made on a worker thread: the loop never blocks)."""
    home = root / name
    await asyncio.to_thread(init_home, resolve_paths(home), name)
    return home


@asynccontextmanager
async def running(home: Path, config: Config = LOOPBACK, **changes: object) -> AsyncIterator[Node]:
    from p2pmoments.home import load_identity

    paths = resolve_paths(home)
    identity = await asyncio.to_thread(load_identity, paths)
    async with Node(paths=paths, config=replace(config, **changes), identity=identity) as node:
        yield node


async def eventually(condition: Callable[[], T], *, timeout: float = 10.0, what: str = "") -> T:
    """Wait, without sleeping blindly, until `condition()` is truthy."""
    try:
        async with asyncio.timeout(timeout):
            delay = 0.005
            while True:
                value = condition()
                if value:
                    return value
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


async def until(
    node: Node, check: Callable[[], Awaitable[bool]], *, timeout: float = 20, what: str = ""
) -> None:
    """Wait for an async condition, re-checking each time `node` publishes an event."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                last = node.events.last_id
                if await check():
                    return
                await node.events.wait_after(last, timeout)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


async def befriend(owner: Node, other: Node) -> None:
    """Pair `other` with `owner` through owner's pairing code, and wait for both sides."""
    link, _ = await owner.pairings.new_code()
    record = await other.pairings.wait((await other.pairings.pair(link)).id, timeout=15)
    assert record is not None
    assert record.state == "confirmed", f"pairing {record.state}: {record.reason}"
    await eventually(
        lambda: owner.friends.get(bytes(other.identity.public.verify_key)),
        what="the owner to record the friend",
    )


async def read_feed(
    node: Node, limit: int = 100, circle: str | None = None
) -> list[dict[str, Any]]:
    """The node's feed as the API shows it (newest first)."""
    from p2pmoments.views import moment_json

    page = await node.moments.feed_page(circle, limit)
    return [moment_json(v, node.friends.person) for v in page.moments]


async def get_moment(node: Node, ref: str) -> dict[str, Any]:
    """One moment as the API shows it."""
    from p2pmoments.views import moment_json

    return moment_json(await node.moments.get(ref), node.friends.person)


def random_png(side: int) -> bytes:
    """A photo that cannot be compressed: side x side random pixels (3 bytes each)."""
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def onion_only(link: str) -> str:
    """The same pairing code with its LAN address left out: only the onion remains, as
    if it had travelled as a photo to someone far away."""
    code = decode_code(link)
    assert code.onion is not None, "a daemon running Tor puts its onion in its codes"
    return encode_code(replace(code, host=None, port=None))


async def befriend_over_tor(owner: Node, scanner: Node) -> None:
    """`scanner` pairs with `owner` by an onion-only code; both end up friends."""
    link, _ = await owner.pairings.new_code()
    record = await scanner.pairings.pair(onion_only(link))
    done = await scanner.pairings.wait(record.id, timeout=TOR_WAIT)
    assert done is not None
    assert done.state == "confirmed", f"pairing {done.state}: {done.reason}"
    await eventually(
        lambda: owner.friends.get(scanner.me), timeout=30, what="the owner to record the friend"
    )
