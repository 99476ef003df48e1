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
    ["react"], ["retract"], ["photo"], ["file"],
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
