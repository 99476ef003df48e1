"""Real daemon processes with --home in a temporary directory, driven through the CLI."""

from __future__ import annotations

import hashlib
import json
import random
import signal
import socket
import threading
from pathlib import Path

import pytest

from p2pmoments.client import ApiClient
from p2pmoments.core.errors import P2PMomentsError
from p2pmoments.paths import resolve_paths
from p2pmoments.store import Store
from tests.daemons import Daemon, cli, start_daemon, wait_for

pytestmark = pytest.mark.process


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "alice"
    result = cli(home, "init", "--name", "Alice")
    assert result.returncode == 0, result.stderr
    return home


def test_init_run_status_rename_and_stop(home: Path, daemons: list[Daemon]) -> None:
    daemon = start_daemon(daemons, home)
    assert "control API:" in daemon.output
    assert daemon.info["api_url"] in daemon.output

    text = cli(home, "status")
    assert text.returncode == 0, text.stderr
    assert "Alice" in text.stdout
    assert "Friends:   0" in text.stdout

    status = json.loads(cli(home, "status", "--json").stdout)
    assert status["api_url"] == daemon.info["api_url"]
    assert status["token_file"] == str(home / "data" / "api.token")
    assert status["listen"][0].startswith("127.0.0.1:")
    assert status["mdns"] is False
    assert status["pid"] == daemon.proc.pid
    # A script can use the API directly with just api_url and token_file.
    assert daemon.api("GET", "/status")["identity"] == status["identity"]

    renamed = cli(home, "profile", "--name", "Alice B.")
    assert renamed.returncode == 0, renamed.stderr
    assert json.loads(cli(home, "profile", "--json").stdout)["name"] == "Alice B."

    assert daemon.stop(signal.SIGTERM) == 0
    assert not (home / "data" / "daemon.json").exists()
    db = Store.open(home / "data" / "p2pmoments.db")
    try:
        assert db.integrity_check() == "ok"
        assert db.get_name() == "Alice B."
    finally:
        db.close()

    after = cli(home, "status")
    assert after.returncode == 1
    assert "no daemon is running" in after.stderr


def test_sigint_also_stops_cleanly(home: Path, daemons: list[Daemon]) -> None:
    daemon = start_daemon(daemons, home)
    assert daemon.stop(signal.SIGINT) == 0
    assert not (home / "data" / "daemon.json").exists()


def test_bad_names_are_refused_by_the_cli(home: Path, daemons: list[Daemon]) -> None:
    start_daemon(daemons, home)
    result = cli(home, "profile", "--name", "x" * 40)
    assert result.returncode == 1
    assert "at most 32 bytes" in result.stderr
    assert json.loads(cli(home, "profile", "--json").stdout)["name"] == "Alice"


def test_init_never_overwrites_an_identity(home: Path) -> None:
    key = (home / "data" / "identity.key").read_bytes()
    again = cli(home, "init", "--name", "Mallory")
    assert again.returncode == 1
    assert "already holds an identity" in again.stderr
    assert cli(home, "init", "--exist-ok").returncode == 0
    assert (home / "data" / "identity.key").read_bytes() == key
    assert (home / "data" / "identity.key").stat().st_mode & 0o777 == 0o600
    assert (home / "data" / "api.token").stat().st_mode & 0o777 == 0o600


def test_run_without_an_identity_says_what_to_do(tmp_path: Path) -> None:
    result = cli(tmp_path / "empty", "run", "--api", "127.0.0.1:0", "--listen", "127.0.0.1:0")
    assert result.returncode == 1
    assert "no identity" in result.stderr
    assert "p2pmoments init" in result.stderr


def test_bad_config_names_key_and_file(home: Path) -> None:
    (home / "config.toml").write_text('[network]\nlisten = "127.0.0.1:0"\nmdsn = false\n')
    result = cli(home, "run")
    assert result.returncode == 1
    assert "network.mdsn" in result.stderr
    assert str(home / "config.toml") in result.stderr


@pytest.mark.parametrize("flag", ["--api", "--listen"])
def test_a_taken_port_is_a_clear_error(home: Path, flag: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = {"--api": "127.0.0.1:0", "--listen": "127.0.0.1:0", flag: f"127.0.0.1:{port}"}
        result = cli(home, "run", "--no-mdns", "--no-tor", *[x for kv in args.items() for x in kv])
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr
    assert "already in use" in result.stderr
    assert not (home / "data" / "daemon.json").exists()


def test_two_daemons_cannot_share_a_home(home: Path, daemons: list[Daemon]) -> None:
    first = start_daemon(daemons, home)
    second = cli(home, "run", "--api", "127.0.0.1:0", "--listen", "127.0.0.1:0", "--no-tor")
    assert second.returncode == 1
    assert "already running" in second.stderr
    assert str(first.proc.pid) in second.stderr
    assert first.api("GET", "/status")["pid"] == first.proc.pid


def test_two_homes_run_side_by_side(tmp_path: Path, daemons: list[Daemon]) -> None:
    homes = [tmp_path / name for name in ("a", "b")]
    for home in homes:
        assert cli(home, "init", "--name", home.name).returncode == 0
    running = [start_daemon(daemons, home) for home in homes]
    names = [json.loads(cli(h, "status", "--json").stdout)["name"] for h in homes]
    assert names == ["a", "b"]
    assert running[0].info["api_url"] != running[1].info["api_url"]


class RenameWriter(threading.Thread):
    """Renames the daemon again and again through the API, recording what was acknowledged."""

    def __init__(self, daemon: Daemon, prefix: str) -> None:
        super().__init__()
        self.daemon, self.prefix = daemon, prefix
        self.sent: list[str] = []
        self.acked: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        for i in range(5000):  # bounded; the kill ends it far sooner
            if self.halt.is_set():
                return
            name = f"{self.prefix}-{i}"
            self.sent.append(name)
            try:
                self.daemon.api("PATCH", "/profile", {"name": name})
            except OSError:  # the daemon died mid-request
                return
            self.acked.append(name)


def test_sigkill_loses_nothing_acknowledged(home: Path, daemons: list[Daemon]) -> None:
    """Kill -9 the daemon mid-write, several times: every acknowledged write is there."""
    rng = random.Random(2026)
    stored = ""
    for round_ in range(3):
        daemon = start_daemon(daemons, home)
        writer = RenameWriter(daemon, f"r{round_}")
        writer.start()
        kill_after = rng.randint(5, 60)
        try:
            wait_for(
                lambda w=writer, n=kill_after: len(w.acked) >= n,
                timeout=60,
                what="acknowledged writes",
            )
            daemon.stop(signal.SIGKILL)
        finally:
            writer.halt.set()
            writer.join(timeout=30)
        db = Store.open(home / "data" / "p2pmoments.db")
        try:
            assert db.integrity_check() == "ok"
            stored = db.get_name()
        finally:
            db.close()
        last_acked = writer.acked[-1]
        # The stored name is the last acknowledged one, or one sent after it.
        assert stored in writer.sent[writer.sent.index(last_acked) :], (stored, last_acked)

    # The home still works: a stale daemon.json does not stop a new daemon.
    daemon = start_daemon(daemons, home)
    assert daemon.api("GET", "/profile")["name"] == stored


class FilePoster(threading.Thread):
    """Posts files again and again through the API (some of the first form of blob, some
    of the second, chunks in packs), recording each acknowledged post and its file."""

    def __init__(self, daemon: Daemon, seed: int) -> None:
        super().__init__()
        self.client = ApiClient(resolve_paths(daemon.home))
        self.rng = random.Random(seed)
        self.acked: dict[str, bytes] = {}  # moment id -> sha256 of its file
        self.halt = threading.Event()

    def run(self) -> None:
        for i in range(1000):  # bounded; the kill ends it far sooner
            if self.halt.is_set():
                return
            size = self.rng.choice([300_000, 3_000_000, 5_000_000, 9_000_000])
            data = self.rng.randbytes(size)
            try:
                moment = self.client.post_multipart(
                    "/moments", {"circle": "files"}, [("file", f"f{i}", data, "x/y")]
                )
            except P2PMomentsError:  # the daemon died mid-request
                return
            self.acked[moment["id"]] = hashlib.sha256(data).digest()


def test_sigkill_loses_no_acknowledged_file(home: Path, daemons: list[Daemon]) -> None:
    """Kill -9 the daemon while it takes in files: every post it acknowledged is there
    after a restart, its file whole (its pack was synced before the answer)."""
    rng = random.Random(13)
    acked: dict[str, bytes] = {}
    for round_ in range(2):
        daemon = start_daemon(daemons, home)
        if round_ == 0:
            assert cli(home, "circle", "create", "files").returncode == 0
        poster = FilePoster(daemon, round_)
        poster.start()
        kill_after = rng.randint(3, 8)
        try:
            wait_for(
                lambda p=poster, n=kill_after: len(p.acked) >= n,
                timeout=120,
                what="acknowledged posts",
            )
            daemon.stop(signal.SIGKILL)
        finally:
            poster.halt.set()
            poster.join(timeout=60)
        acked |= poster.acked
    daemon = start_daemon(daemons, home)
    client = ApiClient(resolve_paths(home))
    shown = {m["id"]: m for m in client.call("GET", "/moments?limit=200")["moments"]}
    for moment, sha in acked.items():
        (file,) = shown[moment]["files"]
        assert file["chunks_held"] == file["chunks"]
        assert hashlib.sha256(client.download(f"/moments/{moment}/files/1")).digest() == sha
    daemon.stop()
    db = Store.open(home / "data" / "p2pmoments.db")
    try:
        assert db.integrity_check() == "ok"
    finally:
        db.close()
