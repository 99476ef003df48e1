"""Memory no member can blow up (issue 22, 4): a hostile member sends moments that
reuse a file reference of 128 index pieces whose chunks exist nowhere. The victim is a
daemon process: its resident memory and its store's growth are measured; an honest
member's post (with a photo) still arrives whole, and its link stays up (spec/sync.md
sections 4 and 5). `run` takes any number of hostile members: one, then ten at once.
Ten at once found that Bob's stop could hang for ever (tests/test_replication_stuck.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import pytest

from p2pmoments.core.moment import Content, Kind, seal_moment
from p2pmoments.core.replication.messages import T_MOMENTS
from p2pmoments.node import Node
from tests.daemons import Daemon
from tests.hostile_refs import cpu_seconds, disk_bytes, hostile_index, rss_bytes
from tests.multinode import befriend, eventually, make_home, random_png, running

REUSES = 200  # moments of each hostile member reusing its reference
PIECES = 128  # the reference's index pieces: 1 TiB claimed
WAIT = 120.0  # seconds an honest post may take, at most (a generous bound, not a target)


async def flood(member: Node, victim: bytes, first: int) -> int:
    """`member` sends the victim REUSES moments reusing one hostile reference (serving
    its first index piece, and nothing else); returns how many it sent."""
    manifest = member.circles.resolve("c")
    key = member.circles.key_for(manifest)
    ref, address, piece = hostile_index(PIECES)
    await asyncio.to_thread(member.moments.blobs.put, address, piece)
    now = int(time.time())
    envelopes = [
        seal_moment(
            member.identity,
            manifest,
            key,
            seq=seq,
            time=now,
            content=Content(kind=Kind.POST, text=f"claim {seq}", blobs=(ref,)),
        ).envelope
        for seq in range(first, first + REUSES)
    ]
    opened = await member.moments.open_many(envelopes)
    await member.moments.store_many(opened.moments)  # held: served when asked
    sent = 0
    for i in range(0, len(envelopes), 100):
        part = envelopes[i : i + 100]
        assert await member.links.send_paced(victim, {0: T_MOMENTS, 1: manifest.circle_id, 2: part})
        sent += len(part)
    return sent


STALLS: list[str] = []  # API calls that found Bob's daemon busy beyond the client's 10 s


async def api(bob: Daemon, path: str, *, tries: int = 1) -> Any:
    """Bob's API, off the loop (the other members run on it); None if it did not answer
    within the client's timeout `tries` times (counted in STALLS: under ten members at
    once, his single store thread can hold a read that long)."""
    for _ in range(tries):
        try:
            return await asyncio.to_thread(bob.api, "GET", path)
        except TimeoutError:
            STALLS.append(path)
    return None


async def wait_until(check: Any, *, what: str, timeout: float = WAIT, every: float = 0.2) -> None:
    """Poll an async condition, `every` seconds apart, at most `timeout` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                if await check():
                    return
                await asyncio.sleep(every)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


async def honest_post(carol: Node, bob: Daemon, text: str) -> float:
    """Carol posts a photo; seconds until Bob's feed shows it whole."""
    began = time.monotonic()
    await carol.posting.post("c", text, photos=[random_png(64)])

    async def whole() -> bool:
        answer = await api(bob, "/moments?limit=5")
        for m in answer["moments"] if answer else []:
            if m["text"] == text:
                return all(p["chunks_held"] == p["chunks"] for p in m["photos"])
        return False

    await wait_until(whole, what=f"Carol's post {text!r} whole at Bob's", every=1.0)
    return time.monotonic() - began


async def run(tmp_path: Path, hostile: int, steps: tuple[str, ...]) -> dict[str, float]:
    STALLS.clear()
    names = ["Carol", "Bob", *(f"H{i}" for i in range(hostile))]
    homes = {n: await make_home(tmp_path, n) for n in names}
    async with contextlib.AsyncExitStack() as stack:
        carol = await stack.enter_async_context(running(homes["Carol"]))
        # Hostile members dial the victim whatever the rings say (a full mesh does).
        members = [
            await stack.enter_async_context(running(homes[n], mesh="full")) for n in names[2:]
        ]
        async with running(homes["Bob"]) as bob_node:
            for other in (bob_node, *members):
                await befriend(carol, other)
            await carol.circles.create("c", names[1:], members_can_post=True)
            await eventually(
                lambda: all(n.circles.all() for n in (bob_node, *members)),
                timeout=30,
                what="every member to hold the manifest",
            )
            bob_key = bob_node.me
        bob = Daemon(homes["Bob"])
        try:
            info = await asyncio.to_thread(bob.wait_ready)
            port = int(info["listen"][0].rsplit(":", 1)[1])
            for m in (carol, *members):  # what mDNS would tell them: where Bob listens
                m.links.seen(bob_key, "127.0.0.1", port, "mdns")
            await eventually(
                lambda: all(bob_key in n.links.linked() for n in (carol, *members)),
                timeout=30,
                what="every member to link with Bob",
            )
            out: dict[str, float] = {}
            out["honest_alone"] = await honest_post(carol, bob, "before")
            rss0, disk0 = rss_bytes(bob.proc.pid), disk_bytes(homes["Bob"])
            groups = {"one": members[:1], "all": members}
            for step, group in ((step, groups[step]) for step in steps):
                began = time.monotonic()
                first = 1 if step == "one" else 1 + REUSES
                sent = await asyncio.gather(
                    *(flood(m, bob_key, first if m is members[0] else 1) for m in group)
                )
                held = 1 + sum(sent) + (1 + REUSES if step == "all" else 0)

                async def stored(held: int = held) -> bool:
                    status = await api(bob, "/status")
                    return status is not None and int(status["moments"]) >= held

                await wait_until(stored, what="Bob to store the hostile moments")
                out[f"stored_{step}"] = time.monotonic() - began
                cpu = cpu_seconds(bob.proc.pid)
                out[f"honest_{step}"] = await honest_post(carol, bob, f"after {step}")
                out[f"cpu_{step}"] = cpu_seconds(bob.proc.pid) - cpu
                # Bob's feed, fifty of the hostile posts on it, answers (within the API
                # client's 10 s, at the third try at most): measured, not asserted
                # against a time.
                began = time.monotonic()
                page = await api(bob, "/moments?limit=50", tries=3)
                out[f"feed_ms_{step}"] = (time.monotonic() - began) * 1000
                assert page is not None, "Bob's feed did not answer, three times in 10 s"
                assert len(page["moments"]) == 50
                assert bob_key in carol.links.linked()  # the honest member's link stays
                out[f"rss_mb_{step}"] = (rss_bytes(bob.proc.pid) - rss0) / 2**20
                out[f"disk_mb_{step}"] = (disk_bytes(homes["Bob"]) - disk0) / 2**20
                out[f"api_stalls_{step}"] = len(STALLS)
            print(out)
            return out
        finally:
            # Measured, printed: under ten members at once, Bob's stop once took over 30 s
            # (work queued on his store thread is finished first).
            began = time.monotonic()
            bob.stop(timeout=180)
            print(f"Bob stopped in {time.monotonic() - began:.1f} s")


async def test_a_hostile_member_cannot_blow_up_a_member(tmp_path: Path) -> None:
    """One member sends 200 moments reusing a reference of 128 index pieces (1 TiB
    claimed; the 16,384 chunks its first piece names exist nowhere): Bob's daemon grows
    by the piece and its names, an honest post with a photo still arrives whole, and
    the honest member's link stays."""
    out = await run(tmp_path, 1, ("one",))
    assert out["rss_mb_one"] < 100  # measured: about 30 MB
    assert out["disk_mb_one"] < 30  # measured: about 10 MB (the piece, 16,384 names)


@pytest.mark.timeout(540)
async def test_ten_hostile_members_at_once_cannot_blow_up_a_member(tmp_path: Path) -> None:
    """One member floods Bob as above, then all ten at once, each with its own reference
    (2,000 moments, 10 TiB claimed): Bob grows by about ten times one member's cost, no
    more; Carol's post still arrives whole, her link stays, the feed answers."""
    out = await run(tmp_path, 10, ("one", "all"))
    assert out["rss_mb_one"] < 100  # measured: about 25 MB
    # Measured: 163 to 169 MB in six runs out of seven, 357 MB in one; mostly Python
    # objects (a million more blocks), the transfer state of 163,840 chunk names.
    assert out["rss_mb_all"] < 480
    assert out["disk_mb_all"] < 200  # measured: 105 MB (10 MB a member)


async def test_a_chunk_asked_and_not_sent_is_answered_as_lacking(tmp_path: Path) -> None:
    """Bob asks Alice for a chunk no moment she holds uses (a relay that does not hold
    the moment yet, or a moment he may not read): she says she lacks it, as for one she
    does not hold, so he asks someone else at once instead of waiting for his link to
    go (spec/sync.md section 4, point 6)."""
    from p2pmoments.core.crypto import random_bytes
    from p2pmoments.core.replication.messages import T_WANT_CHUNKS, Chunk

    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob")]
    async with running(homes[0]) as alice, running(homes[1]) as bob:
        await befriend(alice, bob)
        answers: list[Chunk] = []
        receive = bob.replication.engine.receive_chunks

        def recording(peer: bytes, chunks: Any, now: float) -> Any:
            answers.extend(chunks)
            return receive(peer, chunks, now)

        bob.replication.engine.receive_chunks = recording  # type: ignore[method-assign]
        unknown = random_bytes(32)
        await eventually(lambda: alice.me in bob.links.linked(), what="a link")
        assert bob.links.send(alice.me, {0: T_WANT_CHUNKS, 1: [unknown]})
        await eventually(lambda: answers, what="Alice's answer")
        assert answers == [Chunk(address=unknown, data=None)]
