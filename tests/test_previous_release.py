"""A daemon of the previous protocol and one of today in one circle exchange moments
(issue 23, upgrades).

The previous release is PREVIOUS, the last commit of main before the hello gained its
device (key 6, spec/transport.md section 3; spec/devices.md section 8): its own src/,
taken from this repository's history (tests/make_old_stores.py's OldCode), run as its
own daemon and CLI beside today's. Skipped, saying why, where the history is not there
(a shallow clone).
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemons import Daemon, cli, start_daemon, wait_for
from tests.make_old_stores import ROOT, OldCode

pytestmark = pytest.mark.process
PREVIOUS = "a7e3650"  # schema 5, hello without key 6


@pytest.fixture
def old_code(tmp_path: Path) -> OldCode:
    known = subprocess.run(
        ["git", "-C", str(ROOT), "cat-file", "-e", f"{PREVIOUS}^{{commit}}"],
        capture_output=True,
        check=False,
    )
    if known.returncode != 0:
        pytest.skip(f"commit {PREVIOUS} is not in this clone's history (a shallow clone?)")
    return OldCode(PREVIOUS, tmp_path / "old-code")


@pytest.fixture
def old_daemon(old_code: OldCode, tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "Alice"
    old_code.cli(home, "init", "--name", "Alice")
    process = old_code.run(home)
    try:
        yield home
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)


def feed(moments: list[dict[str, Any]], text: str) -> dict[str, Any] | None:
    return next((m for m in moments if m["text"] == text), None)


def test_a_daemon_of_the_previous_release_and_one_of_today_share_a_circle(
    old_code: OldCode, old_daemon: Path, tmp_path: Path, daemons: list[Daemon]
) -> None:
    alice = old_daemon
    bob = tmp_path / "Bob"
    assert cli(bob, "init", "--name", "Bob").returncode == 0
    start_daemon(daemons, bob)

    # Today's Bob scans the old daemon's code; the old Alice makes a circle and posts.
    link = old_code.cli(alice, "qr", "--link").strip()
    paired = cli(bob, "pair", "--timeout", "30", link)
    assert "now friends" in paired.stdout, paired.stdout + paired.stderr
    old_code.cli(alice, "circle", "create", "family", "--member", "Bob", "--members-can-post")
    data = bytes(range(256)) * 1200  # 300 KiB: more than one chunk
    (tmp_path / "notes.bin").write_bytes(data)
    post = old_code.cli(
        alice, "post", "--circle", "family", "--file", str(tmp_path / "notes.bin"), "from before"
    ).strip()

    def bob_has_it() -> dict[str, Any] | None:
        moments = json.loads(cli(bob, "feed", "--json").stdout)["moments"]
        found = feed(moments, "from before")
        if found is None or found["files"][0]["chunks_held"] != found["files"][0]["chunks"]:
            return None
        return found

    held = wait_for(bob_has_it, timeout=60, what="the old daemon's post at today's")
    assert held["id"] == post
    out = tmp_path / "got.bin"
    assert cli(bob, "file", post, "-o", str(out)).returncode == 0
    assert out.read_bytes() == data

    # Today's Bob answers in the old circle and posts in a circle of his own.
    assert cli(bob, "comment", post, "from today").returncode == 0
    made = cli(bob, "circle", "create", "bobs", "--member", "Alice")
    assert made.returncode == 0, made.stderr
    assert cli(bob, "post", "--circle", "bobs", "hello from today").returncode == 0

    def alice_has_both() -> bool:
        moments = old_code.feed(alice)
        mine = feed(moments, "from before")
        return bool(
            mine
            and [c["text"] for c in mine["comments"]] == ["from today"]
            and feed(moments, "hello from today")
        )

    wait_for(alice_has_both, timeout=60, what="today's comment and post at the old daemon")
