"""Our own tor process (spec/tor.md): finding the program, writing its torrc into a
DataDirectory of the home's, waiting for its control port, and stopping it; and the
home's onion and client-auth keys. The errors every part of our Tor raises are here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from p2pmoments.core.errors import DecodeError, P2PMomentsError
from p2pmoments.core.onion import (
    ClientAuthKey,
    OnionKey,
    TorKeys,
    decode_tor_key_file,
    encode_tor_key_file,
)
from p2pmoments.files import write_file_atomically

__all__ = [
    "INSTALL_HINT",
    "START_TIMEOUT",
    "TorError",
    "TorNotFoundError",
    "find_tor",
    "load_or_create_tor_keys",
]

log = logging.getLogger(__name__)

START_TIMEOUT = 30.0  # from launch to tor's control port answering
STOP_TIMEOUT = 10.0
_POLL = 0.05

INSTALL_HINT = (
    "install it with `apt install tor` (Debian, Ubuntu), `dnf install tor` (Fedora) "
    "or `brew install tor` (macOS), or give its path in network.tor_path"
)


class TorError(P2PMomentsError):
    """Tor failed to start, bootstrap or do what we asked; the message says what tor said."""


class TorNotFoundError(TorError, FileNotFoundError):
    """No tor program to run; the message says how to install it."""


def load_or_create_tor_keys(path: Path) -> TorKeys:
    """The home's onion and client-auth keys, created (mode 0600) on first use, so the
    onion address stays the same across restarts. Blocking: call it in a thread."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        keys = TorKeys(onion=OnionKey.generate(), client_auth=ClientAuthKey.generate())
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            write_file_atomically(path, encode_tor_key_file(keys), mode=0o600, replace=False)
        except FileExistsError:  # another process made it first: use theirs
            return load_or_create_tor_keys(path)
        return keys
    if path.stat().st_mode & 0o077:
        log.warning("%s was readable by others; made it private (0600)", path)
        path.chmod(0o600)
    try:
        return decode_tor_key_file(data)
    except DecodeError as exc:
        raise TorError(f"{path}: {exc}") from None


def find_tor(tor_path: str | os.PathLike[str] | None = None) -> str:
    """The tor program to run: `tor_path` if given, else `tor` on PATH. Blocking."""
    if tor_path is not None:
        path = Path(tor_path)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise TorNotFoundError(f"no tor program at {path}: {INSTALL_HINT}")
        return str(path)
    found = shutil.which("tor")
    if found is None:
        raise TorNotFoundError(f"tor is not installed: {INSTALL_HINT}")
    return found


def _prepare_data_dir(data_dir: Path, extra: Sequence[str]) -> tuple[Path, int]:
    """Write our tor's torrc; return it and the fd of its output log. Blocking."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    data_dir.chmod(0o700)  # tor refuses a DataDirectory others can read
    (data_dir / "onion-auth").mkdir(exist_ok=True, mode=0o700)
    for stale in ("control-port", "notice.log"):  # this run's only: tor would append
        with contextlib.suppress(FileNotFoundError):
            (data_dir / stale).unlink()
    lines = [
        f"DataDirectory {data_dir}",
        "RunAsDaemon 0",
        "ControlPort 127.0.0.1:auto",
        f"ControlPortWriteToFile {data_dir / 'control-port'}",
        "CookieAuthentication 1",
        f"CookieAuthFile {data_dir / 'control_auth_cookie'}",
        "SocksPort 127.0.0.1:auto ExtendedErrors",
        f"ClientOnionAuthDir {data_dir / 'onion-auth'}",
        f"Log notice file {data_dir / 'notice.log'}",
        # If we die without closing our control connection, tor still goes.
        f"__OwningControllerProcess {os.getpid()}",
        *extra,
    ]
    torrc = data_dir / "torrc"
    write_file_atomically(torrc, ("\n".join(lines) + "\n").encode(), mode=0o600)
    out = os.open(data_dir / "tor.out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    return torrc, out


async def _wait_control_port(
    proc: asyncio.subprocess.Process, data_dir: Path, timeout: float
) -> int:
    """Poll for the file tor writes its control port to, failing fast if tor exits."""
    path = data_dir / "control-port"
    try:
        async with asyncio.timeout(timeout):
            while True:
                if proc.returncode is not None:
                    raise TorError(
                        f"tor exited with status {proc.returncode}: "
                        f"{await asyncio.to_thread(_tail, data_dir)}"
                    )
                text = await asyncio.to_thread(_read_text, path)
                # PORT=127.0.0.1:PORT, written whole once the port listens.
                if text.startswith("PORT=") and text.endswith("\n"):
                    return int(text.strip().rpartition(":")[2])
                await asyncio.sleep(_POLL)
    except TimeoutError:
        raise TorError(
            f"tor's control port did not open in {timeout:.0f}s: "
            f"{await asyncio.to_thread(_tail, data_dir)}"
        ) from None


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def _tail(data_dir: Path, lines: int = 5) -> str:
    """The last lines tor wrote, for an error message (tor's notices carry no secrets)."""
    text = _read_text(data_dir / "tor.out") or _read_text(data_dir / "notice.log")
    return " | ".join(text.strip().splitlines()[-lines:]) or "it said nothing"


async def _stop_process(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM by pid, then SIGKILL if it lingers."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
