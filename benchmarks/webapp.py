"""The web app in the distribution's Chromium: first feed rendered, weight, live latency.

1. Time from navigation to the first feed rendered, for a feed of 1,000 moments (--moments N) of
   which 200 have a photo (target under 1 s): the first visit (through the login
   link, empty cache) and reloads; and until the first screen's thumbnails show.
   Baseline: the same first page of the feed fetched by urllib, no browser.
2. The app's JavaScript and CSS, uncompressed and gzipped (target under 150 KB).
   Baseline: jsQR 1.4.0, the decoder the page does not ship (257 KB).
3. Time from Alice's post to the moment shown in Bob's open page, over loopback
   (target under 1 s), for text and for a photo (its thumbnail shown), and from her
   chat message to Bob's open chat. Baseline: the same post reaching Bob's daemon,
   as its moment.added event on a bare SSE client.

    .venv/bin/python benchmarks/webapp.py [--runs N] [--json FILE]
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import daemon_info, p2pm, report, start, stop, wait
from tests.browser import ARGS, CHROMIUM  # the same Chromium, started as the tests start it

from p2pmoments.client import ApiClient
from p2pmoments.paths import resolve_paths

MOMENTS = 1000  # --moments: a feed of this many, one in five with a photo
JSQR_BYTES = 257 * 1000
WEB = Path(__file__).resolve().parent.parent / "src" / "p2pmoments" / "web"


def a_photo(seed: int, size: tuple[int, int] = (1024, 768)) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, (40 + seed * 37 % 200, 90 + seed * 53 % 150, 160))
    draw = ImageDraw.Draw(image)
    for i in range(0, size[0], 48):
        draw.ellipse((i, (seed * 29 + i) % size[1], i + 160, (seed * 29 + i) % size[1] + 160))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


def login_url(home: Path) -> str:
    return p2pm(home, "open", "--print").stdout.strip()


def running(home: Path, name: str) -> tuple[Any, ApiClient]:
    p2pm(home, "init", "--name", name)
    proc = start(home)
    wait(lambda: daemon_info(home, proc.pid))
    return proc, ApiClient(resolve_paths(home))


def post_photo(client: ApiClient, circle: str, text: str, data: bytes) -> str:
    answer = client.post_multipart(
        "/moments", {"circle": circle, "text": text}, [("photo", "p.jpg", data, "image/jpeg")]
    )
    return str(answer["id"])


def first_feed(browser: Any, home: Path, runs: int) -> tuple[float, float, float]:
    """(first visit, median reload, median until the first screen's thumbnails show), ms."""
    page = browser.new_context(viewport={"width": 1280, "height": 860}, bypass_csp=True).new_page()
    page.goto(login_url(home))
    page.wait_for_function("window.p2pmFirstFeed")
    cold = float(page.evaluate("window.p2pmFirstFeed"))
    warm, photos = [], []
    shown = """() => {
      const imgs = [...document.querySelectorAll('.photo img')]
        .filter(i => i.getBoundingClientRect().top < innerHeight);
      return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0)
        ? performance.now() : false;
    }"""
    for _ in range(runs):
        page.reload()
        page.wait_for_function("window.p2pmFirstFeed")
        warm.append(float(page.evaluate("window.p2pmFirstFeed")))
        photos.append(float(page.wait_for_function(shown, polling="raf").json_value()))
    page.context.close()
    return cold, statistics.median(warm), statistics.median(photos)


def api_page_ms(client: ApiClient, runs: int) -> float:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        client.call("GET", "/moments?limit=20&kind=album")  # what the feed asks
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


class Listener:
    """A bare SSE client on Bob's daemon: when each moment.added event arrived."""

    def __init__(self, api_url: str, token: str) -> None:
        request = urllib.request.Request(  # noqa: S310 - our own loopback API
            api_url + "/events/stream", headers={"Authorization": f"Bearer {token}"}
        )
        self.response = urllib.request.urlopen(request, timeout=60)  # noqa: S310
        self.arrived: dict[str, float] = {}
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for raw in self.response:
                line = raw.decode().strip()
                if line.startswith("data: "):
                    event = json.loads(line[6:])
                    if event.get("kind") == "moment.added":
                        self.arrived[event["data"]["id"]] = time.time() * 1000
        except (OSError, ValueError, AttributeError):
            pass  # closed: the run is over

    def close(self) -> None:
        self.response.close()
        self.thread.join(timeout=5)


def latency(browser: Any, tmp: Path, runs: int) -> tuple[float, ...]:
    """Median ms from Alice's post to Bob's page: text, photo; and to Bob's daemon: same;
    then from Alice's chat message to Bob's open chat, and to Bob's daemon."""
    alice_home, bob_home = tmp / "alice", tmp / "bob"
    alice_proc, alice = running(alice_home, "Alice")
    bob_proc, bob = running(bob_home, "Bob")
    listener = None
    try:
        p2pm(bob_home, "pair", p2pm(alice_home, "qr", "--link").stdout.strip())
        alice.call("POST", "/circles", {"name": "pub", "members": ["Bob"]})
        wait(lambda: bob.call("GET", "/circles")["circles"])
        token = (bob_home / "data" / "api.token").read_text().strip()
        listener = Listener(bob.base_url, token)
        page = browser.new_context(
            viewport={"width": 1280, "height": 860}, bypass_csp=True
        ).new_page()
        page.goto(login_url(bob_home))
        page.wait_for_selector(".moments", state="attached")
        page.evaluate("""() => {
          window.seen = {};
          const note = () => {
            for (const el of document.querySelectorAll('.moment[data-id]')) {
              if (!(el.dataset.id in seen)) seen[el.dataset.id] = Date.now();
            }
          };
          new MutationObserver(note).observe(document.querySelector('.moments'), {childList: true});
        }""")
        text_page, text_daemon, photo_page, photo_daemon = [], [], [], []
        photo = a_photo(7)
        for i in range(runs):
            began = time.time() * 1000
            moment = alice.call("POST", "/moments", {"circle": "pub", "text": f"round {i}"})["id"]
            shown = page.wait_for_function("id => window.seen[id]", arg=moment).json_value()
            text_page.append(float(shown) - began)
            wait(lambda m=moment: m in listener.arrived, timeout=30)
            text_daemon.append(listener.arrived[moment] - began)

            began = time.time() * 1000
            moment = post_photo(alice, "pub", f"photo {i}", photo)
            loaded = page.wait_for_function(
                """id => {
                  const i = document.querySelector(`.moment[data-id="${id}"] .photo img`);
                  return i && i.complete && i.naturalWidth > 0 ? Date.now() : false;
                }""",
                arg=moment,
                polling="raf",
                timeout=30_000,
            ).json_value()
            photo_page.append(float(loaded) - began)
            wait(lambda m=moment: m in listener.arrived, timeout=30)
            photo_daemon.append(listener.arrived[moment] - began)
        page.context.close()
        chat_page, chat_daemon = chat_latency(browser, alice, bob, bob_home, listener, runs)
        return (
            statistics.median(text_page),
            statistics.median(text_daemon),
            statistics.median(photo_page),
            statistics.median(photo_daemon),
            statistics.median(chat_page),
            statistics.median(chat_daemon),
        )
    finally:
        if listener is not None:
            listener.close()
        stop(alice_proc)
        stop(bob_proc)


def chat_latency(
    browser: Any, alice: ApiClient, bob: ApiClient, bob_home: Path, listener: Listener, runs: int
) -> tuple[list[float], list[float]]:
    """Ms from Alice's chat message to Bob's open chat showing it, and to Bob's daemon."""
    chat = alice.call(
        "POST", "/circles", {"name": "Alice & Bob", "members": ["Bob"], "kind": "conversation"}
    )["id"]
    wait(lambda: any(c["id"] == chat for c in bob.call("GET", "/circles")["circles"]))
    page = browser.new_context(viewport={"width": 390, "height": 844}, bypass_csp=True).new_page()
    page.goto(login_url(bob_home))
    page.wait_for_selector("main .view-title")
    page.goto(page.url.split("#")[0] + f"#/chat/{chat}")
    page.wait_for_selector(".thread", state="attached")
    page.evaluate("""() => {
      window.seen = {};
      new MutationObserver(() => {
        for (const el of document.querySelectorAll('.thread .message[data-id]')) {
          if (!(el.dataset.id in seen)) seen[el.dataset.id] = Date.now();
        }
      }).observe(document.querySelector('.thread'), {childList: true});
    }""")
    shown, arrived = [], []
    for i in range(runs):
        began = time.time() * 1000
        moment = alice.call("POST", "/moments", {"circle": chat, "text": f"line {i}"})["id"]
        at = page.wait_for_function("id => window.seen[id]", arg=moment).json_value()
        shown.append(float(at) - began)
        wait(lambda m=moment: m in listener.arrived, timeout=30)
        arrived.append(listener.arrived[moment] - began)
    page.context.close()
    return shown, arrived


def weight() -> tuple[int, int]:
    """The app's JS and CSS: bytes uncompressed, and gzipped one file at a time."""
    files = [p for p in WEB.iterdir() if p.suffix in (".js", ".css")]
    raw = sum(p.stat().st_size for p in files)
    packed = sum(len(gzip.compress(p.read_bytes(), 9)) for p in files)
    return raw, packed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--moments", type=int, default=MOMENTS, help="moments in the feed")
    args = parser.parse_args()
    moments = max(5, args.moments)
    photos = moments // 5
    raw, packed = weight()
    if not Path(CHROMIUM).exists():
        print(f"no Chromium at {CHROMIUM} (apt-get install chromium): only the weight")
        report(
            [("JS + CSS, KB uncompressed", raw / 1000, "jsQR alone (not shipped), KB", 257)],
            args.json,
        )
        return
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        home = Path(tmp) / "feed"
        proc, client = running(home, "Alice")
        try:
            client.call("POST", "/circles", {"name": "family"})
            began = time.perf_counter()
            photo = a_photo(1)
            for i in range(moments):
                if i % (moments // photos) == moments // photos - 1:  # the newest has one
                    post_photo(client, "family", f"moment {i} with a photo", photo)
                else:
                    client.call("POST", "/moments", {"circle": "family", "text": f"moment {i}"})
            print(
                f"posted {moments} moments ({photos} photos) in {time.perf_counter() - began:.1f} s"
            )
            cold, warm, thumbs = first_feed(browser, home, args.runs)
            api_ms = api_page_ms(client, args.runs)
        finally:
            stop(proc)
        text_page, text_daemon, photo_page, photo_daemon, chat_page, chat_daemon = latency(
            browser, Path(tmp), args.runs
        )
        browser.close()
    report(
        [
            ("first feed, first visit (login, cold cache), ms", cold, "target, ms", 1000),
            (
                "first feed, reload, median ms",
                warm,
                "GET /moments?limit=20&kind=album (urllib), ms",
                api_ms,
            ),
            ("first screen's thumbnails shown, median ms", thumbs, "target, ms", 1000),
            ("JS + CSS, KB uncompressed", raw / 1000, "target, KB", 150),
            (
                "JS + CSS, KB gzipped",
                packed / 1000,
                "jsQR alone (not shipped), KB",
                JSQR_BYTES / 1000,
            ),
            (
                "Alice's chat message -> Bob's open chat, median ms",
                chat_page,
                "-> Bob's daemon event, ms",
                chat_daemon,
            ),
            (
                "Alice posts text -> Bob's page, median ms",
                text_page,
                "-> Bob's daemon event, ms",
                text_daemon,
            ),
            (
                "Alice posts photo -> Bob's thumbnail, median ms",
                photo_page,
                "-> Bob's daemon event, ms",
                photo_daemon,
            ),
        ],
        args.json,
    )


if __name__ == "__main__":
    main()
