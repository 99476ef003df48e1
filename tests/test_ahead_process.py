"""Chunks sent ahead between real daemon processes: a member killed (SIGKILL) while a
post's chunks arrive ahead of it loses nothing it needs; after a restart the file
arrives whole (spec/sync.md section 4, point 10)."""

from __future__ import annotations

import hashlib
import json
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from p2pmoments.client import ApiClient
from p2pmoments.core.errors import P2PMomentsError
from p2pmoments.paths import resolve_paths
from tests.daemons import Daemon, cli, start_daemon, wait_for

pytestmark = pytest.mark.process

SIZE = 48 << 20  # long enough to be killed half-way through


def chunk_files(home: Path) -> int:
    """Received chunks held loose (those sent ahead land there, no moment using them)."""
    root = resolve_paths(home).blob_dir
    return sum(1 for folder in root.glob("[0-9a-f][0-9a-f]") for _ in folder.iterdir())


def test_a_member_killed_while_chunks_come_ahead_still_gets_the_file_whole(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    for home, name in ((alice, "Alice"), (bob, "Bob")):
        assert cli(home, "init", "--name", name).returncode == 0
    start_daemon(daemons, alice)
    receiver = start_daemon(daemons, bob)
    assert cli(bob, "pair", cli(alice, "qr", "--link").stdout.strip()).returncode == 0
    assert cli(alice, "circle", "create", "files", "--member", "Bob").returncode == 0
    wait_for(
        lambda: json.loads(cli(bob, "circles", "--json").stdout),
        timeout=30,
        what="Bob to be in the circle",
    )
    source = tmp_path / "big.bin"
    source.write_bytes(bytes(range(256)) * (SIZE // 256 - 1) + b"end")
    posted: list[dict[str, Any]] = []

    def post() -> None:
        posted.append(
            ApiClient(resolve_paths(alice)).post_multipart(
                "/moments",
                {"circle": "files"},
                [("file", "big.bin", source, "application/octet-stream")],
            )
        )

    poster = threading.Thread(target=post)
    poster.start()
    try:
        wait_for(lambda: chunk_files(bob) >= 4, timeout=60, what="chunks ahead at Bob")
        receiver.stop(signal.SIGKILL)  # mid-way: the post goes on, Alice is not touched
        assert not posted  # they came ahead: before the post was acknowledged
    finally:
        poster.join(timeout=120)
    assert posted, "Alice acknowledged the post"
    moment = posted[0]["id"]
    assert chunk_files(bob) < SIZE // (512 << 10)  # it was killed before it had them all

    start_daemon(daemons, bob)
    client = ApiClient(resolve_paths(bob))

    def whole() -> bool:
        try:
            shown = client.call("GET", f"/moments/{moment}")
        except P2PMomentsError:
            return False  # the moment has not come yet
        (file,) = shown["files"]
        return bool(file["chunks_held"] == file["chunks"])

    wait_for(whole, timeout=60, what="the file at Bob after his restart")
    got = hashlib.sha256(client.download(f"/moments/{moment}/files/1")).digest()
    assert got == hashlib.sha256(source.read_bytes()).digest()
