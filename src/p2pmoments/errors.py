"""Errors the node raises about what a user asked for (the API maps them to codes)."""

from __future__ import annotations

from p2pmoments.core.errors import DecodeError, P2PMomentsError

__all__ = ["AmbiguousError", "FriendLimitError", "NotFoundError", "NotOwnerError"]


class NotFoundError(P2PMomentsError):
    """No such friend, circle or moment."""


class AmbiguousError(NotFoundError):
    """A reference matches several; the message lists them."""


class FriendLimitError(P2PMomentsError):
    """At the friend cap."""


class NotOwnerError(DecodeError):
    """Only a circle's owner may change it; only a moment's author may retract it."""
