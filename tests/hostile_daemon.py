"""`python -m tests.hostile_daemon --home DIR run`: a daemon as a hostile co-member could
run it (issue 18, 1). It declares each photo it posts as the type its bytes suggest (a
web page as text/html, an SVG as image/svg+xml) and sends the bytes as they are, where
ours sends only the image types it has checked and re-encoded. Everything else is the
daemon as shipped."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from p2pmoments import posting
from p2pmoments.cli import main
from p2pmoments.media import Photo


def declared_as_its_bytes(data: bytes, **_: Any) -> Photo:
    thumb = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 100, 50)).save(thumb, format="JPEG")
    return Photo(
        data=data,
        media_type="image/svg+xml" if b"<svg" in data else "text/html",
        width=8,
        height=8,
        thumbnail=thumb.getvalue(),
        thumb_width=8,
        thumb_height=8,
    )


posting.prepare_photo = declared_as_its_bytes  # type: ignore[assignment]
raise SystemExit(main())
