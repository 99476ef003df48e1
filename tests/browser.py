"""The distribution's Chromium driven by Playwright, for the web app's tests: launching it,
logging a page in through `p2pmoments open --print`, screenshots, a fake camera."""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import segno
from PIL import Image

from tests.daemons import cli

CHROMIUM = os.environ.get("P2PM_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# Playwright's own browser download cannot work here: the distribution's Chromium, quiet.
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 860}
TIMEOUT_MS = 20_000


def skip_reason() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install -e '.[test]')"
    return None


@contextmanager
def playwright() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


def launch(p: Any, *extra: str) -> Any:
    """A fresh Chromium (Playwright gives it a new, empty profile)."""
    return p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[*ARGS, *extra])


def login_url(home: Path) -> str:
    answer = cli(home, "open", "--print")
    assert answer.returncode == 0, answer.stderr
    return answer.stdout.strip()


def open_app(browser: Any, home: Path, viewport: dict[str, int] = DESKTOP, **context: Any) -> Any:
    """A page of `home`'s daemon, logged in the way a person is: through a login link."""
    page = browser.new_context(viewport=viewport, **context).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors
    page.goto(login_url(home))
    page.wait_for_selector("main .view-title")
    page.evaluate("window.__sameDocument = true")  # gone if the page ever reloads
    return page


def never_reloaded(page: Any) -> bool:
    return bool(page.evaluate("window.__sameDocument === true"))


def artifacts(tmp_path: Path) -> Path:
    """Where screenshots go: $P2PM_ARTIFACTS if set, else the test's temporary folder."""
    folder = Path(os.environ.get("P2PM_ARTIFACTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def screenshots(page: Any, folder: Path, name: str) -> list[Path]:
    """The page at phone and desktop size."""
    saved = []
    before = page.viewport_size
    page.evaluate("document.querySelectorAll('.toast').forEach(t => t.remove())")
    for label, size in (("phone", PHONE), ("desktop", DESKTOP)):
        page.set_viewport_size(size)
        page.evaluate("window.scrollTo(0, 0)")
        page.wait_for_timeout(300)  # let the layout settle: a picture, not a condition
        path = folder / f"{name}-{label}.png"
        page.screenshot(path=str(path))
        saved.append(path)
    page.set_viewport_size(before)
    return saved


def qr_video(text: str, path: Path, frames: int = 6) -> Path:
    """A .y4m video of a QR code, for --use-file-for-fake-video-capture (a camera)."""
    width, height = 640, 480
    code = io.BytesIO()
    segno.make(text, error="m").save(code, kind="png", scale=4, border=4)
    qr = Image.open(io.BytesIO(code.getvalue())).convert("RGB")
    side = min(420, height - 40)
    qr = qr.resize((side, side), Image.Resampling.NEAREST)
    frame = Image.new("RGB", (width, height), (96, 86, 80))
    frame.paste(qr, ((width - side) // 2, (height - side) // 2))
    y, cb, cr = frame.convert("YCbCr").split()
    half = (width // 2, height // 2)
    planes = y.tobytes() + cb.resize(half).tobytes() + cr.resize(half).tobytes()
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            out.write(b"FRAME\n" + planes)
    return path
