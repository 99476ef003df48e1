"""Notes written together (spec/notes.md), two daemons in one process over loopback.

1. Keystroke to the other daemon: Alice types one character into a note; the time
   until Bob's daemon shows it in the note (median of N). Baseline: the same path
   for a comment (Alice comments, Bob's daemon holds it): what notes add to the
   circle's own transport.
2. Stored size of a 50,000-character note after 20,000 edits (one character each,
   typed in runs of 40 at places spread over the text; --scattered: each at another
   place, the CRDT's worst case), before and after compaction (spec/notes.md section 5): the note's
   moments held and its stored document. Baseline: the text's own size in UTF-8.
3. Time to open that note: a fresh reader loads it from the store, compacted.
   Baseline: rebuilding it from its 20,000 edits (before compaction).

    .venv/bin/python benchmarks/notes.py [--runs N] [--edits N] [--scattered] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import Row, report
from tests.multinode import befriend, eventually, make_home, running, until

from p2pmoments import notes as notes_module
from p2pmoments.node import Node
from p2pmoments.notes import Notes
from p2pmoments.views import moment_text

TEXT, EDITS = 50_000, 20_000
RUN = 40  # characters typed in a row at one place, as people type


def notes_of(node: Node) -> Notes:
    return Notes(
        node.store,
        node.moments,
        node.posting,
        node.circles,
        node.events,
        lambda key: node.friends.person(key).identity,
    )


async def latency(alice: Node, bob: Node, runs: int) -> tuple[float, float]:
    na, nb = notes_of(alice), notes_of(bob)
    ref = moment_text((await na.create("work", "Live", "start")).id)

    async def bob_has(text: str) -> bool:
        try:
            return (await nb.read(ref)).text == text
        except Exception:
            return False

    await until(bob, lambda: bob_has("start"), timeout=30, what="the note")
    note_times, comment_times = [], []
    text = "start"
    for n in range(runs):
        text += "abcdefghij"[n % 10]
        began = time.perf_counter()
        await na.write(ref, base=None, title=None, text=text)
        await until(bob, lambda t=text: bob_has(t), timeout=30, what="a keystroke")
        note_times.append(time.perf_counter() - began)
    post = await alice.posting.post("work", "comments' baseline")

    async def bob_holds(moment_id: bytes) -> bool:
        return await bob.moments.row_of(moment_id) is not None

    await until(bob, lambda: bob_holds(post.id), timeout=30, what="the post")
    for n in range(runs):
        began = time.perf_counter()
        comment = await alice.posting.comment(moment_text(post.id), f"c{n}")
        await until(bob, lambda c=comment.id: bob_holds(c), timeout=30, what="a comment")
        comment_times.append(time.perf_counter() - began)
    return statistics.median(note_times) * 1000, statistics.median(comment_times) * 1000


async def sizes(alice: Node, edits: int, scattered: bool) -> list[Row]:
    notes_module.COMPACT_EDITS = 10**9  # measured before compaction first
    na = notes_of(alice)
    first = "x" * (TEXT - edits)
    note = await na.create("work", "Long", first)
    ref = moment_text(note.id)
    text = first
    began = time.perf_counter()
    at = 0
    for n in range(edits):
        if scattered or n % RUN == 0:  # a new place in the text (else typing on)
            at = (n * 7919) % (len(text) + 1)
        text = text[:at] + "abcdefghijklmnopqrstuvwxyz"[n % 26] + text[at:]
        at += 1
        await na.write(ref, base=None, title=None, text=text)
    typing = time.perf_counter() - began
    count, moments_bytes, state = await na.sizes(ref)
    await na.aclose()
    # Opening it, rebuilt from its edits: its stored document forgotten.
    await alice.store.run(lambda s: s._conn.execute("DELETE FROM notes"))
    began = time.perf_counter()
    assert (await notes_of(alice).read(ref)).text == text
    rebuild = time.perf_counter() - began
    live = na._open[note.id]
    async with live.lock:
        await na._compact(live)
    after_count, after_moments, after_state = await na.sizes(ref)
    await na.aclose()
    began = time.perf_counter()
    assert (await notes_of(alice).read(ref)).text == text
    opening = time.perf_counter() - began
    size = len(text.encode())
    print(
        f"{edits} edits typed in {typing:.1f} s; before: {count} moments, "
        f"{moments_bytes} B + document {state} B; after: {after_count} moments, "
        f"{after_moments} B + document {after_state} B",
        file=sys.stderr,
    )
    return [
        (
            f"note after {edits} edits, before compaction (KB)",
            (moments_bytes + state) / 1000,
            "its text in UTF-8 (KB)",
            size / 1000,
        ),
        (
            f"note after {edits} edits, after compaction (KB)",
            (after_moments + after_state) / 1000,
            "its text in UTF-8 (KB)",
            size / 1000,
        ),
        (
            "time to open it, compacted (ms)",
            opening * 1000,
            f"rebuilt from its {edits} edits (ms)",
            rebuild * 1000,
        ),
    ]


async def main_async(runs: int, edits: int, scattered: bool) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="p2pm-bench-notes-", dir="/dev/shm") as tmp:
        root = Path(tmp)
        homes = [await make_home(root, n) for n in ("Alice", "Bob")]
        async with running(homes[0]) as alice:
            async with running(homes[1]) as bob:
                await befriend(alice, bob)
                await alice.circles.create("work", ["Bob"], members_can_post=True)
                await eventually(lambda: bob.circles.all(), what="the manifest")
                note_ms, comment_ms = await latency(alice, bob, runs)
            # Sizes with Alice alone: what she stores, not the two daemons' shared cores.
            rows: list[Row] = [
                (
                    "keystroke to the other daemon (ms, median)",
                    note_ms,
                    "a comment to the other daemon (ms)",
                    comment_ms,
                ),
            ]
            rows += await sizes(alice, edits, scattered)
            return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--edits", type=int, default=EDITS)
    parser.add_argument(
        "--scattered",
        action="store_true",
        help="every edit at another place (the worst case for the CRDT), not typed in runs",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report(asyncio.run(main_async(args.runs, args.edits, args.scattered)), args.json)


if __name__ == "__main__":
    main()
