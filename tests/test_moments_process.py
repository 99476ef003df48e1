"""Circles and moments through the CLI of a real daemon."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemons import Daemon, cli, wait_for

pytestmark = pytest.mark.process


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.close()


def test_a_circle_a_post_a_comment_a_reaction_and_a_retraction(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    for home, name in ((alice, "Alice"), (bob, "Bob")):
        assert cli(home, "init", "--name", name).returncode == 0
        daemons.append(Daemon(home))
        daemons[-1].wait_ready()
    assert cli(bob, "pair", cli(alice, "qr", "--link").stdout.strip()).returncode == 0
    wait_for(
        lambda: json.loads(cli(alice, "friends", "--json").stdout)["friends"],
        timeout=15,
        what="Alice to know Bob",
    )

    created = cli(alice, "circle", "create", "family", "--member", "Bob")
    assert created.returncode == 0, created.stderr
    assert "family" in created.stdout
    assert "Bob" in created.stdout

    posted = cli(alice, "post", "--circle", "family", "--expires", "2h", "ice cream!")
    assert posted.returncode == 0, posted.stderr
    moment_id = posted.stdout.strip()
    assert len(moment_id) == 56

    assert cli(alice, "comment", moment_id[:8], "so sweet").returncode == 0
    assert cli(alice, "react", moment_id[:8], "❤️").returncode == 0
    feed = cli(alice, "feed")
    assert "ice cream!" in feed.stdout
    assert "↳ Alice: so sweet" in feed.stdout
    assert "❤️ 1" in feed.stdout
    shown = json.loads(cli(alice, "moment", moment_id, "--json").stdout)
    assert shown["expires"] is not None
    assert shown["circle"]["name"] == "family"

    removed = cli(alice, "circle", "remove", "family", "Bob")
    assert removed.returncode == 0, removed.stderr
    circles = json.loads(cli(alice, "circles", "--json").stdout)
    assert [len(c["members"]) for c in circles] == [1]
    assert circles[0]["epoch"] == 1

    assert cli(alice, "retract", moment_id[:8]).returncode == 0
    assert "[retracted]" in cli(alice, "feed").stdout
    status = json.loads(cli(alice, "status", "--json").stdout)
    assert status["circles"] == 1
    assert status["moments"] == 0


def test_bad_input_to_moment_commands(tmp_path: Path, daemons: list[Daemon]) -> None:
    home = tmp_path / "alice"
    assert cli(home, "init", "--name", "Alice").returncode == 0
    daemons.append(Daemon(home))
    daemons[-1].wait_ready()
    bad_duration = cli(home, "post", "--circle", "x", "--expires", "soon", "hi")
    assert bad_duration.returncode == 2
    assert "duration like 90s" in bad_duration.stderr
    no_circle = cli(home, "post", "--circle", "nowhere", "hi")
    assert no_circle.returncode == 1
    assert "no circle is called" in no_circle.stderr
    no_friend = cli(home, "circle", "create", "family", "--member", "Zed")
    assert no_friend.returncode == 1
    assert "no friend is called" in no_friend.stderr
