"""Read receipts (issue 20, item 3; spec/moments.md section 11): when the person has read
a conversation up to someone else's message, and allows it (off by default), every
member is told by a signed, encrypted moment of kind 10 naming that message. Delivered
marks need nothing sent: they come from the members' haves (replication.py)."""

from __future__ import annotations

import logging

from p2pmoments.core.errors import P2PMomentsError
from p2pmoments.core.manifest import Manifest
from p2pmoments.posting import Posting
from p2pmoments.store import AsyncStore, Place, Store

__all__ = ["ReadReceipts"]

log = logging.getLogger(__name__)

SETTING = "read_receipts"  # meta key: "1" if the person sends read receipts


class ReadReceipts:
    """Whether the person sends read receipts, and sending them."""

    def __init__(self, store: AsyncStore, posting: Posting, device: bytes) -> None:
        self._store = store
        self._posting = posting
        self._device = device  # the author of our own moments
        self._enabled: bool | None = None  # read from the store once

    async def enabled(self) -> bool:
        """True if the person lets members see what they read (off by default)."""
        if self._enabled is None:
            self._enabled = await self._store.run(Store.get_meta, SETTING) == "1"
        return self._enabled

    async def set_enabled(self, on: bool) -> None:
        """Send read receipts from now on, or stop."""
        await self._store.run(Store.set_meta, SETTING, "1" if on else "0")
        self._enabled = on

    async def read(self, manifest: Manifest, place: Place) -> None:
        """The person read a circle up to `place` (their mark moved): in a conversation,
        if allowed and the post there is someone else's, tell the members."""
        if not manifest.conversation or not await self.enabled():
            return
        post = await self._store.run(Store.post_at, manifest.circle_id, place)
        if post is None or post[1] == self._device:
            return
        try:
            await self._posting.read_receipt(manifest, post[0])
        except P2PMomentsError as exc:  # removed meanwhile: nothing to tell
            log.info("no read receipt sent: %s", exc)
