"""Logging to standard output (the journal under systemd)."""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["configure_logging"]


def configure_logging(level: str) -> None:
    """Send log records at `level` and above to stdout; no timestamps under the journal."""
    under_journal = "JOURNAL_STREAM" in os.environ
    fmt = (
        "%(levelname)s %(name)s: %(message)s"
        if under_journal
        else ("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log would print every API call at info level.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
