"""Circles and moments through the CLI of a real daemon."""

from __future__ import annotations

import json
import subprocess
import sys
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
    empty = cli(home, "friends", "rename", "", "Zed")
    assert empty.returncode == 1
    assert "name the friend" in empty.stderr
    assert "Not Found" not in empty.stderr


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
            "caption": "",
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


def test_text_from_standard_input_or_a_file_and_clear_errors_for_bad_outputs(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    import subprocess
    import sys

    home = tmp_path / "alice"
    assert cli(home, "init", "--name", "Alice").returncode == 0
    daemons.append(Daemon(home))
    daemons[-1].wait_ready()
    assert cli(home, "circle", "create", "family").returncode == 0
    letter = "Dear all,\n" + "news " * 2000  # about 10 KB: too long for an argument list?
    piped = subprocess.run(
        [
            sys.executable,
            "-m",
            "p2pmoments",
            "--home",
            str(home),
            "post",
            "--circle",
            "family",
            "-",
        ],
        input=letter,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert piped.returncode == 0, piped.stderr
    notes = tmp_path / "notes.txt"
    notes.write_text("from a file")
    posted = cli(home, "post", "--circle", "family", "--text-file", str(notes), "--photo", "")
    assert posted.returncode == 1  # an empty photo path is a clear error, not a traceback
    assert "Traceback" not in posted.stderr
    from_file = cli(home, "post", "--circle", "family", "--text-file", str(notes))
    assert from_file.returncode == 0, from_file.stderr
    texts = [m["text"] for m in json.loads(cli(home, "feed", "--json").stdout)["moments"]]
    assert sorted(texts) == sorted(["from a file", letter])  # posted in the same second
    moment_id = from_file.stdout.strip()
    for output, message in (
        (tmp_path / "no" / "such" / "folder" / "x.jpg", "does not exist"),
        (tmp_path, "is a folder"),
    ):
        bad = cli(home, "photo", moment_id, "-o", str(output))
        assert bad.returncode == 1
        assert message in bad.stderr
        assert "Traceback" not in bad.stderr


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

    # Count what crosses Dave's link while a photo goes to Bob: keepalives at most.
    from tests.photos import photo_with_location

    def link_bytes(home: Path) -> int:
        (alice,) = json.loads(cli(home, "peers", "--json").stdout)
        return int(alice["bytes_in"]) + int(alice["bytes_out"])

    photo = tmp_path / "photo.jpg"
    photo.write_bytes(photo_with_location(1600, 1200))
    dave_before, bob_before = link_bytes(homes["dave"]), link_bytes(homes["bob"])
    posted = cli(homes["alice"], "post", "--circle", "family", "--photo", str(photo), "beach")
    assert posted.returncode == 0, posted.stderr

    def photo_at_bob() -> bool:
        feed = json.loads(cli(homes["bob"], "feed", "--json").stdout)["moments"]
        shown = [m for m in feed if m["text"] == "beach"]
        return (
            bool(shown) and shown[0]["photos"][0]["chunks_held"] == shown[0]["photos"][0]["chunks"]
        )

    wait_for(photo_at_bob, timeout=30, what="the photo to reach Bob")
    assert link_bytes(homes["bob"]) - bob_before > photo.stat().st_size  # it did travel
    crossed = link_bytes(homes["dave"]) - dave_before
    # A keepalive ping or pong is 25 bytes on the wire (2 length + 23 sealed); anything
    # about the circle (a have, a manifest, a moment) would be far bigger and uneven.
    assert crossed <= 4 * 25, crossed
    assert crossed % 25 == 0, crossed
    assert "Nothing here yet." in cli(homes["dave"], "feed").stdout


def _free_ports(count: int) -> list[int]:
    """Loopback ports free right now (held open together, so they differ)."""
    import socket

    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _texts(home: Path) -> set[str]:
    # `feed --json` prints a page as the API does (issue 10, item 22).
    return {m["text"] for m in json.loads(cli(home, "feed", "--json").stdout)["moments"]}


def test_a_partition_heals_and_every_member_ends_with_every_moment(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    """Alice and Bob on one side, Carol on the other, each posting; when Carol can reach
    Alice again, everyone holds everything (Bob gets Carol's through Alice: Bob and
    Carol are not friends and, without mDNS, cannot find each other)."""
    from tests.daemons import start_daemon

    homes = {n: tmp_path / n for n in ("alice", "bob", "carol")}
    for name, home in homes.items():
        assert cli(home, "init", "--name", name.title()).returncode == 0
        start_daemon(daemons, home)
    for other in ("bob", "carol"):
        link = cli(homes["alice"], "qr", "--link").stdout.strip()
        assert cli(homes[other], "pair", link).returncode == 0
    ids = {n: json.loads(cli(h, "status", "--json").stdout)["identity"] for n, h in homes.items()}
    made = cli(
        homes["alice"], "circle", "create", "pub", "--member", "Bob", "--member", "Carol",
        "--members-can-post",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    for other in ("bob", "carol"):
        wait_for(
            lambda other=other: json.loads(cli(homes[other], "circles", "--json").stdout),
            timeout=20,
            what=f"{other} to hold the circle",
        )
    for daemon in list(daemons):
        assert daemon.stop() == 0

    # The partition: new addresses; Alice is told where Bob is, nobody where Carol is.
    pa, pb, pc = _free_ports(3)
    bob_at = f"{ids['bob']}@127.0.0.1:{pb}"
    start_daemon(daemons, homes["alice"], "--listen", f"127.0.0.1:{pa}", "--peer", bob_at)
    start_daemon(daemons, homes["bob"], "--listen", f"127.0.0.1:{pb}")
    carol = start_daemon(daemons, homes["carol"], "--listen", f"127.0.0.1:{pc}")
    for name in ("alice", "bob", "carol"):
        assert cli(homes[name], "post", "--circle", "pub", f"from {name}").returncode == 0
    wait_for(
        lambda: (
            _texts(homes["bob"]) == {"from alice", "from bob"}
            and _texts(homes["alice"]) == {"from alice", "from bob"}
        ),
        timeout=30,
        what="Alice and Bob to have each other's",
    )
    assert _texts(homes["carol"]) == {"from carol"}

    # It heals: Carol learns where Alice is.
    assert carol.stop() == 0
    alice_at = f"{ids['alice']}@127.0.0.1:{pa}"
    start_daemon(daemons, homes["carol"], "--listen", f"127.0.0.1:{pc}", "--peer", alice_at)
    everything = {"from alice", "from bob", "from carol"}
    for name in ("alice", "bob", "carol"):
        wait_for(
            lambda name=name: _texts(homes[name]) == everything,
            timeout=30,
            what=f"{name} to hold every moment",
        )


def test_the_author_leaves_a_member_relays_and_a_removed_member_gets_nothing_new(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    """Bob and Carol are not friends: Alice's signed manifest lets them link (found by
    mDNS) for the circle alone, so Bob relays to Carol after Alice has gone."""
    homes = {n: tmp_path / n for n in ("alice", "bob", "carol")}

    def start(name: str) -> Daemon:
        daemon = Daemon(homes[name], mdns=True)
        daemons.append(daemon)
        daemon.wait_ready()
        return daemon

    for name, home in homes.items():
        assert cli(home, "init", "--name", name.title()).returncode == 0
    running = {name: start(name) for name in homes}
    for other in ("bob", "carol"):
        link = cli(homes["alice"], "qr", "--link").stdout.strip()
        assert cli(homes[other], "pair", link).returncode == 0
    for circle, members in (("pub", ["Bob", "Carol"]), ("news", ["Carol"])):
        args = [a for m in members for a in ("--member", m)]
        assert cli(homes["alice"], "circle", "create", circle, *args).returncode == 0
    wait_for(
        lambda: len(json.loads(cli(homes["carol"], "circles", "--json").stdout)) == 2,
        timeout=30,
        what="Carol to hold both circles",
    )

    # Carol is away when Alice posts; then Alice goes too. Only Bob can pass it on.
    assert running["carol"].stop() == 0
    assert cli(homes["alice"], "post", "--circle", "pub", "relay me").returncode == 0
    wait_for(lambda: "relay me" in _texts(homes["bob"]), timeout=30, what="Bob to get it")
    assert running["alice"].stop() == 0
    running["carol"] = start("carol")
    wait_for(lambda: "relay me" in _texts(homes["carol"]), timeout=60, what="Bob to relay it")
    assert not any(f["name"] == "Bob" for f in json.loads(
        cli(homes["carol"], "friends", "--json").stdout)["friends"])  # fmt: skip

    # Alice is back and removes Carol from "pub": what follows there never reaches her.
    running["alice"] = start("alice")
    removed = cli(homes["alice"], "circle", "remove", "pub", "Carol")
    assert removed.returncode == 0, removed.stderr
    assert cli(homes["alice"], "post", "--circle", "pub", "after Carol left").returncode == 0
    wait_for(lambda: "after Carol left" in _texts(homes["bob"]), timeout=30, what="Bob")
    # A barrier: a later moment of a circle Carol is still in. Links keep order, so
    # once it is at Carol, anything sent to her before it would be there too.
    assert cli(homes["alice"], "post", "--circle", "news", "barrier").returncode == 0
    wait_for(lambda: "barrier" in _texts(homes["carol"]), timeout=30, what="the barrier")
    assert _texts(homes["carol"]) == {"relay me", "barrier"}


def test_what_peers_chose_reaches_the_terminal_as_text_and_downloads_as_data(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    """A moment's text and a file's name are chosen by their author: the CLI shows the
    escape sequences and direction overrides in them as U+FFFD (they could retitle the
    terminal, clear it, or make "gpj.exe" read "exe.jpg"); --json keeps them exact, as
    escapes; a download is written where the user says, never executable."""
    home = tmp_path / "alice"
    assert cli(home, "init", "--name", "Alice").returncode == 0
    daemons.append(Daemon(home))
    daemons[-1].wait_ready()
    assert cli(home, "circle", "create", "family").returncode == 0
    hostile = "\x1b]0;owned\x07title \x1b[2Jclear \x9b31m red \u202egpj.exe"
    payload = tmp_path / "payload"
    payload.write_bytes(b"#!/bin/sh\necho owned\n")
    named = tmp_path / "x\u202egpj.sh"
    named.write_bytes(payload.read_bytes())
    posted = subprocess.run(
        [
            sys.executable,
            "-m",
            "p2pmoments",
            "--home",
            str(home),
            "post",
            "--circle",
            "family",
            "--file",
            str(named),
            "--text-file",
            "-",
        ],
        input=hostile,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert posted.returncode == 0, posted.stderr
    shown = cli(home, "feed")
    assert shown.returncode == 0
    for unsafe in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert unsafe not in shown.stdout
    assert "\ufffd]0;owned\ufffdtitle" in shown.stdout
    assert "x\ufffdgpj.sh" in shown.stdout
    exact = json.loads(cli(home, "feed", "--json").stdout)["moments"][0]
    assert exact["text"] == hostile
    assert exact["files"][0]["name"] == "x\u202egpj.sh"
    assert "\x1b" not in cli(home, "feed", "--json").stdout
    out = tmp_path / "saved.bin"
    assert cli(home, "file", exact["id"], "1", "-o", str(out)).returncode == 0
    assert out.read_bytes() == payload.read_bytes()
    assert out.stat().st_mode & 0o111 == 0
