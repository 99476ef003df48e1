"""A systemd user unit that runs the daemon in the background at login."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from p2pmoments.core.errors import P2PMomentsError
from p2pmoments.files import write_file_atomically
from p2pmoments.paths import Paths

__all__ = ["ServiceError", "has_systemd", "install", "uninstall", "unit_name", "unit_text"]

Runner = Callable[[Sequence[str]], subprocess.CompletedProcess[str]]


class ServiceError(P2PMomentsError):
    """The service could not be installed or removed."""


def _run(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=False, timeout=60)


def has_systemd() -> bool:
    """True when this system runs systemd and has systemctl."""
    return shutil.which("systemctl") is not None and Path("/run/systemd/system").is_dir()


def unit_dir() -> Path:
    """Where systemd looks for the user's own units."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user"


def unit_name(paths: Paths) -> str:
    """p2pmoments.service, or one name per home when --home is used."""
    if paths.home is None:
        return "p2pmoments.service"
    digest = hashlib.blake2b(str(paths.home).encode(), digest_size=4).hexdigest()
    return f"p2pmoments-{digest}.service"


def _quote(arg: str) -> str:
    if arg and all(c.isalnum() or c in "/._-=:@+" for c in arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unit_text(paths: Paths, python: str = sys.executable) -> str:
    """The unit file's text."""
    args = [python, "-m", "p2pmoments"]
    if paths.home is not None:
        args += ["--home", str(paths.home)]
    args.append("run")
    where = f" ({paths.home})" if paths.home is not None else ""
    return (
        "[Unit]\n"
        f"Description=p2pmoments daemon{where}\n"
        "After=network-online.target\n"
        "Wants=network-online.target\n"
        "\n"
        "[Service]\n"
        "Type=exec\n"
        f"ExecStart={' '.join(_quote(a) for a in args)}\n"
        "Restart=on-failure\n"
        "RestartSec=5\n"
        "KillSignal=SIGTERM\n"
        "TimeoutStopSec=20\n"
        "Environment=PYTHONUNBUFFERED=1\n"
        "UMask=0077\n"
        "NoNewPrivileges=yes\n"
        "\n"
        "[Install]\n"
        "WantedBy=default.target\n"
    )


def _systemctl(runner: Runner, *args: str) -> None:
    result = runner(["systemctl", "--user", *args])
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()
        raise ServiceError(f"`systemctl --user {' '.join(args)}` failed: {detail}")


def _require_systemd(check: Callable[[], bool]) -> None:
    if not check():
        raise ServiceError(
            "this system does not run systemd, so no background service can be installed; "
            "start the daemon with `p2pmoments run` from your session's startup instead"
        )


def install(
    paths: Paths,
    *,
    start: bool = True,
    directory: Path | None = None,
    runner: Runner = _run,
    systemd_check: Callable[[], bool] = has_systemd,
) -> Path:
    """Write the unit, then enable it (and start it unless `start` is False)."""
    _require_systemd(systemd_check)
    directory = directory or unit_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / unit_name(paths)
    write_file_atomically(path, unit_text(paths).encode(), mode=0o644)
    _systemctl(runner, "daemon-reload")
    _systemctl(runner, "enable", *(["--now"] if start else []), path.name)
    return path


def uninstall(
    paths: Paths,
    *,
    directory: Path | None = None,
    runner: Runner = _run,
    systemd_check: Callable[[], bool] = has_systemd,
) -> Path:
    """Stop and disable the unit, then remove its file."""
    _require_systemd(systemd_check)
    path = (directory or unit_dir()) / unit_name(paths)
    if not path.exists():
        raise ServiceError(f"no service is installed ({path} does not exist)")
    runner(["systemctl", "--user", "disable", "--now", path.name])  # may already be stopped
    path.unlink()
    _systemctl(runner, "daemon-reload")
    return path
