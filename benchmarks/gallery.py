"""The gallery of a circle's photos in the distribution's Chromium (issue 20, item 6).

Time from the page's load at #/gallery to the first screen of a circle of 2,000 photos
(200 posts of 10 photos): its first page drawn (date headers, grid) and the thumbnails
of the first screen shown, on the first load there and on reloads (target under 1 s).
Baselines in the same run: the same first page of photos fetched by urllib, no browser,
and the feed's first render of the same circle.

    .venv/bin/python benchmarks/gallery.py [--runs N] [--json FILE] [--screenshot PNG]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import report, stop
from tests.browser import ARGS, CHROMIUM
from webapp import a_photo, login_url, running

from p2pmoments.client import ApiClient

POSTS, PER_POST = 200, 10
FIRST_PAGE = 120  # what gallery.js asks for first

SHOWN = """() => {
  const imgs = [...document.querySelectorAll('.gallery-grid img')]
    .filter(i => i.getBoundingClientRect().top < innerHeight);
  return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0)
    ? performance.now() : false;
}"""


def fill(client: ApiClient) -> str:
    circle = str(client.call("POST", "/circles", {"name": "family"})["id"])
    photos = [a_photo(seed, (640, 480)) for seed in range(PER_POST)]
    began = time.perf_counter()
    for i in range(POSTS):
        client.post_multipart(
            "/moments",
            {"circle": circle, "text": f"day out {i}"},
            [("photo", f"p{n}.jpg", data, "image/jpeg") for n, data in enumerate(photos)],
        )
    print(f"posted {POSTS * PER_POST} photos in {time.perf_counter() - began:.1f} s")
    return circle


def gallery(browser: Any, home: Path, circle: str, runs: int, shot: Path | None) -> list[float]:
    """(first load drawn, reload drawn, reload thumbnails shown, feed reload drawn), ms:
    each from the start of the page's load at #/gallery (or #/feed)."""
    page = browser.new_context(viewport={"width": 1280, "height": 860}).new_page()
    page.goto(login_url(home))
    page.wait_for_selector("main .view-title")
    page.goto(page.url.split("#")[0] + f"#/gallery/{circle}")
    page.reload()  # the first load of the page at the gallery (the app's files now cached)
    page.wait_for_function("() => window.p2pmGallery")
    cold = float(page.evaluate("window.p2pmGallery"))
    drawn, shown, feed = [], [], []
    for _ in range(runs):
        page.reload()
        page.wait_for_function("() => window.p2pmGallery")
        drawn.append(float(page.evaluate("window.p2pmGallery")))
        shown.append(float(page.wait_for_function(SHOWN, polling="raf").json_value()))
    if shot:
        page.set_viewport_size({"width": 1100, "height": 720})
        page.wait_for_function(SHOWN, polling="raf")
        page.screenshot(path=str(shot))
    page.goto(page.url.split("#")[0] + f"#/feed/{circle}")
    for _ in range(runs):
        page.reload()
        page.wait_for_function("() => window.p2pmFirstFeed")
        feed.append(float(page.evaluate("window.p2pmFirstFeed")))
    page.context.close()
    return [cold, statistics.median(drawn), statistics.median(shown), statistics.median(feed)]


def api_page_ms(client: ApiClient, circle: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        client.call("GET", f"/circles/{circle}/photos?limit={FIRST_PAGE}")
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--screenshot", type=Path, help="save the gallery's first screen here")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        print(f"no Chromium at {CHROMIUM} (apt-get install chromium): nothing to measure")
        return
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        home = Path(tmp) / "album"
        proc, client = running(home, "Alice")
        try:
            circle = fill(client)
            cold, drawn, shown, feed = gallery(browser, home, circle, args.runs, args.screenshot)
            api_ms = api_page_ms(client, circle, args.runs)
        finally:
            stop(proc)
        browser.close()
    report(
        [
            ("gallery of 2,000 photos drawn, first load, ms", cold, "target, ms", 1000),
            ("gallery drawn, reload, median ms", drawn, "GET its first page (urllib), ms", api_ms),
            ("gallery's first screen of thumbnails shown, median ms", shown, "target, ms", 1000),
            (
                "gallery drawn, reload, median ms",
                drawn,
                "the circle's feed drawn, reload, ms",
                feed,
            ),
        ],
        args.json,
    )


if __name__ == "__main__":
    main()
