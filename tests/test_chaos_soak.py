"""The chaos soak (tests/chaos.py): five daemons on a namespaced LAN under a random
schedule of work and faults, then every promise checked.

CI runs a short one (SOAK_SECONDS, 30 s of chaos by default); `make soak` a long one
(30 minutes unless SOAK_SECONDS says otherwise). SOAK_SEED replays a schedule;
SOAK_DIR keeps the homes, daemon logs and schedule.jsonl (make soak: soak-results/).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos import Soak, integrity
from tests.chaos_lan import Lan, Node, lan_unavailable

SECONDS = float(os.environ.get("SOAK_SECONDS", "30"))
LONG = SECONDS >= 300  # memory and descriptors are asserted only over a long run
NODES = 5

pytestmark = [
    pytest.mark.root,
    pytest.mark.process,
    pytest.mark.soak,
    pytest.mark.timeout(SECONDS * 1.5 + 1800),  # setup, chaos, convergence, checks
]


@pytest.fixture
def lan() -> Iterator[Lan]:
    reason = lan_unavailable()
    if reason:
        pytest.skip(reason)
    with Lan(NODES) as made:
        yield made


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Where the homes, logs and schedule go: SOAK_DIR (emptied first) to keep them."""
    kept = os.environ.get("SOAK_DIR")
    if not kept:
        return tmp_path
    shutil.rmtree(kept, ignore_errors=True)
    Path(kept).mkdir(parents=True)
    return Path(kept)


@pytest.fixture
def nodes(lan: Lan, root: Path) -> Iterator[list[Node]]:
    made = [Node(lan, i, root) for i in range(NODES)]
    try:
        yield made
    finally:
        for node in made:
            node.close()


def test_nothing_acknowledged_is_lost_or_misdelivered_under_chaos(
    lan: Lan, nodes: list[Node], root: Path
) -> None:
    seed = int(os.environ.get("SOAK_SEED") or random.SystemRandom().getrandbits(32))
    log = root / "schedule.jsonl"
    print(f"\nsoak: SOAK_SEED={seed} SOAK_SECONDS={SECONDS:g}; schedule in {log}")
    for node in nodes:
        node.init()
        node.start()
    soak = Soak(lan, nodes, seed=seed, long=LONG, log=log)
    soak.befriend_all()
    soak.first_circles()
    print(f"soak: warm-up (a {soak.max_file >> 20} MiB file from each) {soak.warm_up():.0f} s")

    soak.run(SECONDS)
    soak.heal_everything()
    problems = soak.converge(timeout=900 if LONG else 180)
    figures = soak.figures
    if not problems:
        problems = soak.check_bytes()
    figures.usage_last = soak.usage()
    for node in nodes:
        assert node.up, f"{node.name} died on its own:\n{node.daemon and node.daemon.output}"
    for node in nodes:
        assert node.kill(signal.SIGTERM) == 0
    broken = {n.name: integrity(n.home) for n in nodes}

    print(f"soak: operations {figures.ops}")
    print(f"soak: refused (not acknowledged) {figures.refused}")
    print(f"soak: faults {figures.faults}; packets they dropped {lan.shaped_drops}")
    print(f"soak: reorderings TCP saw (nstat TcpExt*Reorder, all hosts) {lan.reordered()}")
    for fault, reason in figures.skipped_faults.items():
        print(f"soak: fault {fault} skipped: {reason}")
    print(f"soak: file bytes posted {figures.file_bytes}")
    print(f"soak: {figures.moments} moments, {figures.checks} (moment, daemon) checks")
    print(f"soak: converged {figures.converge_seconds:.1f} s after the last heal")
    for i, (rss, fds) in sorted(figures.usage_last.items()):
        first = figures.usage_first.get(i)
        print(f"soak: {nodes[i].name} ({nodes[i].lifetimes} runs) RSS {first and first[0]} -> "
              f"{rss} KiB, fds {first and first[1]} -> {fds}")  # fmt: skip
    print(f"soak: integrity {broken}; SOAK_SEED={seed}")

    assert not figures.server_errors, figures.server_errors
    assert not problems, f"seed {seed}: " + "\n".join(problems[:40])
    assert all(v == "ok" for v in broken.values()), broken
    if LONG:
        # Node 0 is never restarted: one process from the first minute to the end.
        rss0, fds0 = figures.usage_first[0]
        rss1, fds1 = figures.usage_last[0]
        assert rss1 <= rss0 * 1.2, f"resident memory grew from {rss0} to {rss1} KiB"
        assert fds1 <= max(fds0 * 1.2, fds0 + 2), f"descriptors grew from {fds0} to {fds1}"
