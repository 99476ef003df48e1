"""Where everything lives on disk: the only importer of platformdirs.

With a home directory (`--home DIR` or P2PMOMENTS_HOME), everything lives
under it, so several daemons can run side by side on one machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

__all__ = ["HOME_ENV", "Paths", "resolve_paths"]

HOME_ENV = "P2PMOMENTS_HOME"
APP = "p2pmoments"


@dataclass(frozen=True, slots=True, kw_only=True)
class Paths:
    """The files and directories of one p2pmoments home."""

    config_dir: Path
    data_dir: Path
    home: Path | None = None

    @property
    def config_file(self) -> Path:
        """The TOML configuration."""
        return self.config_dir / "config.toml"

    @property
    def key_file(self) -> Path:
        """The identity's secret keys (mode 0600, spec/identity.md)."""
        return self.data_dir / "identity.key"

    @property
    def token_file(self) -> Path:
        """The control API's bearer token (mode 0600)."""
        return self.data_dir / "api.token"

    @property
    def db_file(self) -> Path:
        """The SQLite store."""
        return self.data_dir / "p2pmoments.db"

    @property
    def blob_dir(self) -> Path:
        """Encrypted chunks of photos and files."""
        return self.data_dir / "blobs"

    @property
    def tor_dir(self) -> Path:
        """The DataDirectory of the daemon's own tor (spec/tor.md)."""
        return self.data_dir / "tor"

    @property
    def tor_key_file(self) -> Path:
        """Our onion service key and client-auth key (mode 0600, spec/tor.md)."""
        return self.data_dir / "tor.key"

    @property
    def device_file(self) -> Path:
        """On a device other than a person's first: whose it is, and while it joins, the
        device link it joins by (mode 0600: the link holds a secret; spec/devices.md)."""
        return self.data_dir / "device.json"

    @property
    def sheet_file(self) -> Path:
        """On a home being recovered: the recovery sheet, until the lost devices are
        revoked (mode 0600; spec/devices.md section 5.3)."""
        return self.data_dir / "recovery.sheet"

    @property
    def person_link_file(self) -> Path:
        """On a home recovered from a sheet: the person's link secret (mode 0600)."""
        return self.data_dir / "person-link.key"

    @property
    def daemon_file(self) -> Path:
        """Written by a running daemon: its pid and addresses, for clients to find it."""
        return self.data_dir / "daemon.json"

    @property
    def web_sessions_file(self) -> Path:
        """The web app's sessions, hashed (mode 0600)."""
        return self.data_dir / "web-sessions.json"

    @property
    def open_file(self) -> Path:
        """`p2pmoments open` writes the login redirect page here (mode 0600)."""
        return self.data_dir / "open.html"

    @property
    def lock_file(self) -> Path:
        """Held by the running daemon, so two cannot share one home."""
        return self.data_dir / "daemon.lock"


def resolve_paths(home: str | os.PathLike[str] | None = None) -> Paths:
    """The paths for `home`, else P2PMOMENTS_HOME, else the platform's user directories."""
    chosen = home if home is not None else os.environ.get(HOME_ENV) or None
    if chosen is not None:
        root = Path(chosen).expanduser().absolute()
        return Paths(config_dir=root, data_dir=root / "data", home=root)
    return Paths(
        config_dir=Path(platformdirs.user_config_dir(APP)),
        data_dir=Path(platformdirs.user_data_dir(APP)),
    )
