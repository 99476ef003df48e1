"""Circles and moments through the CLI of a real daemon."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.daemons import Daemon, cli, wait_for

pytestmark = pytest.mark.process


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


def test_photo_round_trip_through_the_cli(tmp_path: Path, daemons: list[Daemon]) -> None:
    from PIL import Image

    from tests.photos import has_location, photo_with_location, pixels

    home = tmp_path / "alice"
    assert cli(home, "init", "--name", "Alice").returncode == 0
    daemons.append(Daemon(home))
    daemons[-1].wait_ready()
    assert cli(home, "circle", "create", "family").returncode == 0
    original = tmp_path / "beach.jpg"
    original.write_bytes(photo_with_location(1600, 1200))
    notes = tmp_path / "notes.txt"
    notes.write_text("sunscreen\n")
    posted = cli(
        home,
        "post",
        "--circle",
        "family",
        "--photo",
        str(original),
        "--file",
        str(notes),
        "at the beach",
    )
    assert posted.returncode == 0, posted.stderr
    moment_id = posted.stdout.strip()

    full, thumb, file = tmp_path / "full.jpg", tmp_path / "thumb.jpg", tmp_path / "got.txt"
    assert cli(home, "photo", moment_id[:8], "-o", str(full)).returncode == 0
    assert cli(home, "photo", moment_id[:8], "1", "--thumbnail", "-o", str(thumb)).returncode == 0
    assert cli(home, "file", moment_id[:8], "-o", str(file)).returncode == 0
    assert not has_location(full.read_bytes())
    assert pixels(full.read_bytes()) == pixels(original.read_bytes())
    assert Image.open(thumb).size == (320, 240)
    assert file.read_text() == "sunscreen\n"
    shown = json.loads(cli(home, "moment", moment_id, "--json").stdout)
    size = full.stat().st_size
    chunks = -(-size // (256 * 1024)) + 1  # 256 KiB chunks, and one for the thumbnail
    assert shown["photos"] == [
        {
            "n": 1,
            "type": "image/jpeg",
            "width": 1600,
            "height": 1200,
            "size": size,
            "chunks": chunks,
            "chunks_held": chunks,  # all here: nothing is shown as arriving
        }
    ]
    assert shown["files"][0]["name"] == "notes.txt"
    feed = cli(home, "feed").stdout
    assert "photo 1: 1600×1200, 1.4 MB\n" in feed
    assert "file 1: notes.txt, 10 B\n" in feed

    blobs = home / "data" / "blobs"
    assert any(blobs.rglob("*"))
    stored = b"".join(p.read_bytes() for p in blobs.rglob("*") if p.is_file())
    assert b"sunscreen" not in stored  # kept encrypted on disk
    assert cli(home, "retract", moment_id[:8]).returncode == 0
    assert not [p for p in blobs.rglob("*") if p.is_file()]  # retraction deletes the blobs
    missing = cli(home, "photo", moment_id[:8], "-o", str(full))
    assert missing.returncode == 1


def test_a_post_reaches_a_member_and_not_a_friend_outside_the_circle(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    homes = {n: tmp_path / n for n in ("alice", "bob", "dave")}
    for name, home in homes.items():
        assert cli(home, "init", "--name", name.title()).returncode == 0
        daemons.append(Daemon(home))
        daemons[-1].wait_ready()
    link = cli(homes["alice"], "qr", "--link").stdout.strip()
    assert cli(homes["bob"], "pair", link).returncode == 0
    link = cli(homes["alice"], "qr", "--link").stdout.strip()
    assert cli(homes["dave"], "pair", link).returncode == 0
    wait_for(
        lambda: len(json.loads(cli(homes["alice"], "friends", "--json").stdout)["friends"]) == 2,
        timeout=15,
        what="Alice to know both",
    )
    assert cli(homes["alice"], "circle", "create", "family", "--member", "Bob").returncode == 0
    assert cli(homes["alice"], "post", "--circle", "family", "for Bob only").returncode == 0
    wait_for(
        lambda: "for Bob only" in cli(homes["bob"], "feed").stdout,
        timeout=20,
        what="Bob's daemon to receive the moment",
    )
    circles = json.loads(cli(homes["bob"], "circles", "--json").stdout)
    assert [c["name"] for c in circles] == ["family"]
    assert circles[0]["mine"] is False
    assert "Nothing here yet." in cli(homes["dave"], "feed").stdout
    assert json.loads(cli(homes["dave"], "circles", "--json").stdout) == []
