"""A real daemon whose data directory is on a small tmpfs that fills up (issue 23): the CLI
says the disk is full and where to free space, `status` says so, and once space is freed
the same post works without a restart; a store that cannot be migrated for want of room
is left as it was, with the same message. Needs root to mount (skipped otherwise)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemons import Daemon, cli, start_daemon, wait_for
from tests.test_store_migration import OLD, integrity, schema_of

pytestmark = pytest.mark.process

SIZE = "64m"


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs, unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    if shutil.which("mount") is None:
        pytest.skip("no mount command here")
    where = tmp_path / "small"
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)


def fill(where: Path) -> Path:
    """Fill the file system of `where` to the last byte; returns the filler file."""
    filler = where / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            block = bytes(size)
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, block)
    finally:
        os.close(fd)
    return filler


def status(home: Path) -> dict[str, object]:
    answer = cli(home, "status", "--json")
    assert answer.returncode == 0, answer.stderr
    found: dict[str, object] = json.loads(answer.stdout)
    return found


def disk_of(home: Path) -> dict[str, object]:
    shown = status(home)["disk"]
    assert isinstance(shown, dict)
    return shown


def test_a_post_into_a_full_disk_says_so_and_works_once_space_is_freed(
    tmpfs: Path, tmp_path: Path, daemons: list[Daemon]
) -> None:
    home = tmpfs / "alice"
    assert cli(home, "init", "--name", "Alice").returncode == 0
    daemon = start_daemon(daemons, home)
    assert cli(home, "circle", "create", "family").returncode == 0
    video = tmp_path / "video.bin"  # off the small disk
    video.write_bytes(os.urandom(4 << 20))
    filler = fill(tmpfs)

    refused = cli(home, "post", "--circle", "family", "--file", str(video), "the video")
    assert refused.returncode != 0
    assert f"the disk is full: free space on {tmpfs}" in refused.stderr, refused.stderr
    shown = disk_of(home)
    assert shown["full"] is True
    assert shown["path"] == str(tmpfs)
    assert daemon.proc.poll() is None  # still running

    filler.unlink()
    wait_for(lambda: disk_of(home)["full"] is False, timeout=20, what="room to be seen")
    posted = cli(home, "post", "--circle", "family", "--file", str(video), "the video")
    assert posted.returncode == 0, posted.stderr
    feed = cli(home, "feed")
    assert "the video" in feed.stdout
    daemon.stop()
    assert integrity(home) == "ok"


def test_a_store_that_cannot_migrate_for_want_of_room_is_left_as_it_was(tmpfs: Path) -> None:
    with tarfile.open(OLD) as tar:
        tar.extractall(tmpfs, filter="data")
    home = tmpfs / "Alice"
    before = schema_of(home)
    filler = fill(tmpfs)
    try:
        refused = cli(
            home,
            "run",
            "--listen",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
            "--no-tor",
            "--no-mdns",
            timeout=60,
        )
    finally:
        filler.unlink()
    assert refused.returncode != 0
    assert f"the disk is full: free space on {tmpfs}" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    assert schema_of(home) == before
    assert integrity(home) == "ok"
