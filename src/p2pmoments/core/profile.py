"""Rules for what a person may call themselves (spec/identity.md section 4)."""

from __future__ import annotations

import unicodedata

from p2pmoments.core.errors import DecodeError

__all__ = ["MAX_NAME_BYTES", "check_display_name"]

# The pairing QR carries the name and must stay small (issue 3, research/transport.md).
MAX_NAME_BYTES = 32


def check_display_name(name: str) -> str:
    """The name in NFC with outer spaces trimmed; DecodeError if it is empty, too long or odd."""
    if not isinstance(name, str):
        raise DecodeError("a name is text")
    cleaned = unicodedata.normalize("NFC", name).strip()
    if not cleaned:
        raise DecodeError("a name cannot be empty")
    size = len(cleaned.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        raise DecodeError(f"a name is at most {MAX_NAME_BYTES} bytes of UTF-8, this one is {size}")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in cleaned):
        raise DecodeError("a name cannot contain control or invisible formatting characters")
    return cleaned
