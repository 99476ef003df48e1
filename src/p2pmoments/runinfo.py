"""daemon.json: where the running daemon of a home answers, for its clients.

Apart from `daemon` so that the CLI finds the daemon without importing it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from p2pmoments.files import write_file_atomically
from p2pmoments.paths import Paths

__all__ = ["DaemonInfo", "read_daemon_info", "write_daemon_info"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DaemonInfo:
    """What a running daemon publishes in daemon.json for its clients."""

    pid: int
    api_url: str
    listen: list[str]


def read_daemon_info(paths: Paths) -> DaemonInfo | None:
    """The running daemon's daemon.json, or None if there is none or it is unreadable."""
    try:
        data = json.loads(paths.daemon_file.read_text(encoding="utf-8"))
        return DaemonInfo(
            pid=int(data["pid"]),
            api_url=str(data["api_url"]),
            listen=[str(a) for a in data["listen"]],
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_daemon_info(paths: Paths, info: DaemonInfo) -> None:
    """Publish daemon.json (0600), whole (blocking)."""
    payload = json.dumps({"pid": info.pid, "api_url": info.api_url, "listen": info.listen})
    write_file_atomically(paths.daemon_file, payload.encode(), mode=0o600)
