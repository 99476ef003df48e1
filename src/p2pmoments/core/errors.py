"""Error types shared by the core, split by who is to blame (style.md, rule 3)."""

from __future__ import annotations

__all__ = [
    "DecodeError",
    "LocalProtocolError",
    "P2PMomentsError",
    "RejectedError",
    "RemoteProtocolError",
]


class P2PMomentsError(Exception):
    """Base of every error p2pmoments raises on purpose."""


class DecodeError(P2PMomentsError, ValueError):
    """Bytes or text that do not follow the format they claim to be in."""


class LocalProtocolError(P2PMomentsError):
    """We misused an API: a bug on our side."""


class RemoteProtocolError(P2PMomentsError):
    """The peer misbehaved; the link to it is closed with `close_code`."""

    def __init__(self, message: str, *, close_code: int = 1) -> None:
        super().__init__(message)
        self.close_code = close_code


class RejectedError(DecodeError):
    """A manifest, moment or notice that must not be stored; `reason` says why
    (spec/moments.md section 5)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Why a device other than its person's first cannot open a moment yet: another device of
# its person has not given it that epoch's key (spec/devices.md section 9). Not junk: the
# moment is asked for again once the key arrives.
NO_KEY_YET = "this device holds no key for that epoch yet"
