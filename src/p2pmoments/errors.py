"""Errors about what a user asked for; the API maps each to a status and a code
(api.py, ERRORS). A peer's malformed input raises core.errors.DecodeError instead,
and never reaches a user as such."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from p2pmoments.core.errors import DecodeError, P2PMomentsError

__all__ = [
    "AmbiguousError",
    "ConfigError",
    "DiskFullError",
    "FriendLimitError",
    "NotFoundError",
    "NotOwnerError",
    "PostingError",
    "TooLargeError",
    "UserInputError",
    "user_input",
]


class ConfigError(P2PMomentsError):
    """The configuration is unusable; the message names the key and the file."""


class UserInputError(P2PMomentsError, ValueError):
    """What the user gave cannot be used (a name too long, an empty post...)."""


class TooLargeError(UserInputError):
    """Over a size limit (a photo or file over what the format allows)."""


class NotFoundError(P2PMomentsError):
    """No such friend, circle or moment."""


class AmbiguousError(NotFoundError):
    """A reference matches several; the message lists them."""


class FriendLimitError(P2PMomentsError):
    """At the friend cap."""


class NotOwnerError(P2PMomentsError):
    """Only a circle's owner may change it; only a moment's author may retract it; a
    removed member may not post."""


class DiskFullError(P2PMomentsError):
    """The disk that holds the data directory is full (ENOSPC, a quota, or SQLite's
    "database or disk is full"); `path` is the folder to free space on. Nothing
    acknowledged is lost: what failed was not stored."""

    def __init__(self, path: str, doing: str = "") -> None:
        super().__init__(
            f"the disk is full: free space on {path}{f' ({doing})' if doing else ''}, "
            "then try again"
        )
        self.path = path


class PostingError(P2PMomentsError):
    """A post could not be stored (the database failed, or the daemon is stopping)."""


@contextlib.contextmanager
def user_input() -> Iterator[None]:
    """Where the core checks what a user typed (a name, a pairing link), its DecodeError
    is the user's input error."""
    try:
        yield
    except DecodeError as exc:
        raise UserInputError(str(exc)) from None
