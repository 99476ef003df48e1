"""Creating and reading a p2pmoments home: identity, token, config, database.

Secret files are written whole (temporary file, fsync, rename) with mode 0600
inside a 0700 directory, so a crash never leaves half a key behind.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from p2pmoments import store
from p2pmoments.config import default_config_text
from p2pmoments.core.errors import DecodeError, P2PMomentsError
from p2pmoments.core.identity import Identity, decode_key_file, encode_key_file
from p2pmoments.core.profile import check_display_name
from p2pmoments.files import write_file_atomically
from p2pmoments.paths import Paths

__all__ = [
    "AlreadyInitialisedError",
    "NotInitialisedError",
    "init_home",
    "is_initialised",
    "load_identity",
    "load_or_create_token",
]


class NotInitialisedError(P2PMomentsError):
    """The home has no identity yet."""


class AlreadyInitialisedError(P2PMomentsError):
    """The home already has an identity, which is never overwritten."""


def _make_private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)


def is_initialised(paths: Paths) -> bool:
    """True when the home has an identity."""
    return paths.key_file.exists()


def init_home(paths: Paths, name: str) -> Identity:
    """Create identity, token, config and database; AlreadyInitialisedError if there is one.

    The key file is written last: it marks a finished init, so an interrupted one
    can simply be run again.
    """
    name = check_display_name(name)
    if is_initialised(paths):
        raise AlreadyInitialisedError(f"{paths.key_file} already holds an identity")
    _make_private_dir(paths.config_dir)
    _make_private_dir(paths.data_dir)
    if not paths.config_file.exists():
        write_file_atomically(
            paths.config_file, default_config_text().encode("utf-8"), mode=0o644, replace=False
        )
    load_or_create_token(paths)
    store.initialise(paths.db_file, name)
    identity = Identity.generate()
    try:
        write_file_atomically(paths.key_file, encode_key_file(identity), mode=0o600, replace=False)
    except FileExistsError:
        raise AlreadyInitialisedError(f"{paths.key_file} already holds an identity") from None
    return identity


def load_identity(paths: Paths) -> Identity:
    """Our identity from the key file."""
    try:
        data = paths.key_file.read_bytes()
    except FileNotFoundError:
        raise NotInitialisedError(
            f"no identity in {paths.data_dir}; create one with `p2pmoments init --name NAME`"
        ) from None
    try:
        return decode_key_file(data)
    except DecodeError as exc:
        raise P2PMomentsError(f"{paths.key_file}: {exc}") from None


def load_or_create_token(paths: Paths) -> str:
    """The control API's bearer token, created (mode 0600) if missing."""
    try:
        token = paths.token_file.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        token = ""
    if len(token) >= 32:
        return token
    _make_private_dir(paths.data_dir)
    token = secrets.token_urlsafe(32)
    write_file_atomically(paths.token_file, token.encode("ascii"), mode=0o600)
    return token
