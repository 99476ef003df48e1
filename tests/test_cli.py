"""The command line: help with examples, homes, and the systemd service."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from p2pmoments import service
from p2pmoments.cli import main
from p2pmoments.paths import resolve_paths

COMMANDS = [
    ["init"], ["run"], ["status"], ["profile"], ["qr"], ["pair"], ["friends"],
    ["friends", "rename"], ["friends", "remove"], ["friends", "block"], ["friends", "unblock"],
    ["peers"], ["events"], ["service"], ["service", "install"], ["service", "uninstall"],
    ["circles"], ["circle"], ["circle", "create"], ["circle", "add"], ["circle", "remove"],
    ["circle", "rename"], ["circle", "delete"], ["post"], ["feed"], ["moment"], ["comment"],
    ["react"], ["retract"], ["photo"], ["file"], ["notes"], ["note"], ["note", "new"],
    ["note", "show"], ["note", "edit"], ["note", "write"], ["note", "history"],
]  # fmt: skip


@pytest.mark.parametrize("command", [[], *COMMANDS], ids=lambda c: " ".join(c) or "top")
def test_every_help_says_what_it_does_with_an_example(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "example" in out
    assert f"p2pmoments {' '.join(command)}".strip() in out


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2


def test_home_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("P2PMOMENTS_HOME", str(tmp_path / "env-home"))
    assert main(["init", "--name", "Env"]) == 0
    assert (tmp_path / "env-home" / "data" / "identity.key").exists()
    assert (tmp_path / "env-home" / "config.toml").exists()
    # --home wins over the environment.
    assert main(["--home", str(tmp_path / "flag-home"), "init", "--name", "Flag"]) == 0
    assert (tmp_path / "flag-home" / "data" / "identity.key").exists()


def test_client_commands_need_the_daemon_not_the_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = str(tmp_path / "h")
    assert main(["--home", home, "init", "--name", "A"]) == 0
    assert main(["--home", home, "status"]) == 1
    err = capsys.readouterr().err
    assert "no daemon is running" in err
    assert f"p2pmoments --home {home} run" in err  # the hint works as printed


def test_a_bad_flag_address_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--listen", "nowhere"])
    assert exit_info.value.code == 2
    assert "HOST:PORT" in capsys.readouterr().err


def test_a_non_loopback_api_flag_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = str(tmp_path / "h")
    assert main(["--home", home, "init", "--name", "A"]) == 0
    assert main(["--home", home, "run", "--api", "0.0.0.0:0"]) == 1
    assert "loopback" in capsys.readouterr().err


class FakeSystemctl:
    def __init__(self, fail: Sequence[str] = ()) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail

    def __call__(self, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(args))
        code = 1 if any(word in args for word in self.fail) else 0
        return subprocess.CompletedProcess(list(args), code, "", "Failed to connect to bus")


def test_service_install_writes_a_unit_and_enables_it(tmp_path: Path) -> None:
    paths = resolve_paths(tmp_path / "my home")
    systemctl = FakeSystemctl()
    unit = service.install(
        paths, directory=tmp_path / "units", runner=systemctl, systemd_check=lambda: True
    )
    text = unit.read_text()
    assert f'--home "{tmp_path / "my home"}" run' in text
    assert "WantedBy=default.target" in text
    assert "Restart=on-failure" in text
    assert systemctl.calls == [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "--now", unit.name],
    ]
    service.uninstall(
        paths, directory=tmp_path / "units", runner=systemctl, systemd_check=lambda: True
    )
    assert not unit.exists()
    assert ["systemctl", "--user", "disable", "--now", unit.name] in systemctl.calls


def test_each_home_gets_its_own_unit() -> None:
    names = {service.unit_name(resolve_paths(h)) for h in ("/a", "/b")}
    assert len(names) == 2
    assert "p2pmoments.service" not in names


def test_without_systemd_a_clear_message_and_nothing_written(tmp_path: Path) -> None:
    with pytest.raises(service.ServiceError, match="does not run systemd"):
        service.install(
            resolve_paths(tmp_path),
            directory=tmp_path / "units",
            runner=FakeSystemctl(),
            systemd_check=lambda: False,
        )
    assert not (tmp_path / "units").exists()


def test_a_failing_systemctl_is_reported(tmp_path: Path) -> None:
    with pytest.raises(service.ServiceError, match="Failed to connect to bus"):
        service.install(
            resolve_paths(tmp_path),
            directory=tmp_path / "units",
            runner=FakeSystemctl(fail=["daemon-reload"]),
            systemd_check=lambda: True,
        )


def test_service_install_print_shows_the_unit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--home", str(tmp_path), "service", "install", "--print"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("[Unit]")
    assert f"--home {tmp_path} run" in out


def test_a_home_that_is_a_file_is_a_clear_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    for command in (["init", "--name", "A"], ["status"], ["run"]):
        assert main(["--home", str(a_file), *command]) == 2
        err = capsys.readouterr().err
        assert "is a file, not a folder" in err
        assert "Traceback" not in err
    assert a_file.read_text() == "not a folder"


def test_text_over_16_kib_is_refused_before_anything_is_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    home = str(tmp_path / "h")  # no daemon at all: the CLI refuses first
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"x" * (16 * 1024 + 1))))
    assert main(["--home", home, "post", "--circle", "family", "-"]) == 1
    assert "at most 16 KiB" in capsys.readouterr().err
    long_file = tmp_path / "long.txt"
    long_file.write_text("é" * 9000)  # 18,000 bytes of UTF-8
    assert main(["--home", home, "post", "--circle", "f", "--text-file", str(long_file)]) == 1
    assert "at most 16 KiB" in capsys.readouterr().err


def test_an_expiry_over_ten_years_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["post", "--circle", "family", "--expires", "4000d", "hi"])
    assert exit_info.value.code == 2
    assert "at most 10 years" in capsys.readouterr().err


def test_every_help_tells_the_limits_and_the_events(capsys: pytest.CaptureFixture[str]) -> None:
    for command, needle in (("post", "16 KiB"), ("comment", "16 KiB"), ("events", "transfer.*")):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert needle in capsys.readouterr().out


def test_init_at_a_terminal_asks_for_the_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdin", Terminal("x" * 40 + "\nGrandma Jo\n"))
    home = tmp_path / "h"
    assert main(["--home", str(home), "init"]) == 0
    assert "At most 32 bytes" in capsys.readouterr().err
    from p2pmoments.store import Store

    db = Store.open(home / "data" / "p2pmoments.db")
    try:
        assert db.get_name() == "Grandma Jo"
    finally:
        db.close()


def _name_in(home: Path) -> str:
    from p2pmoments.store import Store

    db = Store.open(home / "data" / "p2pmoments.db")
    try:
        return str(db.get_name())
    finally:
        db.close()


def test_init_reads_a_piped_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`echo Alice | make run`: the name comes from the pipe, not the login (root)."""
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("Alice\n"))
    assert main(["--home", str(tmp_path / "a"), "init"]) == 0
    assert _name_in(tmp_path / "a") == "Alice"
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    monkeypatch.setattr("getpass.getuser", lambda: "root")
    assert main(["--home", str(tmp_path / "b"), "init"]) == 0
    assert _name_in(tmp_path / "b") == "Root"  # nothing piped: the login's name, as before


def test_init_refuses_a_piped_name_too_long(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("x" * 40 + "\n"))
    assert main(["--home", str(tmp_path / "h"), "init"]) == 2
    assert "over 32 bytes" in capsys.readouterr().err
    assert not (tmp_path / "h" / "data" / "p2pmoments.db").exists()


def test_the_cli_counts_and_says_online_as_a_person_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    me = {"identity": "a" * 56, "name": "Alice"}
    answers = {
        "/circles": {
            "circles": [
                {"name": "notes", "mine": True, "owner": me, "members_can_post": False,
                 "members": [me]},
            ]
        },
        "/friends": {
            "friends": [
                {"name": "Bob", "their_name": "Bob", "identity": "b" * 56, "state": "friend",
                 "connected": True, "since": 1_700_000_000, "last_seen": 1_700_000_100},
            ],
            "pairings": [],
        },
    }  # fmt: skip

    class Client:
        def __init__(self, paths: object) -> None:
            pass

        def call(self, method: str, path: str, body: object = None) -> object:
            return answers[path]

    monkeypatch.setattr("p2pmoments.cli.moments.ApiClient", Client)
    monkeypatch.setattr("p2pmoments.cli.friends.ApiClient", Client)
    assert main(["--home", str(tmp_path), "circles"]) == 0
    assert main(["--home", str(tmp_path), "friends"]) == 0
    out = capsys.readouterr().out
    assert "1 member: Alice" in out
    assert "1 members" not in out
    assert "Bob" in out
    assert "online" in out
    assert "last seen" not in out
