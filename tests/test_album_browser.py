"""Albums and video in a real Chromium against a real daemon (issue 20, items 6, 8, 9):
a circle's photos by day with download of one and of all, a caption typed in the
composer and shown in the viewer, a video that plays and seeks in byte ranges.
Skipped, saying why, where Chromium or Playwright is missing.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from p2pmoments.client import ApiClient
from p2pmoments.paths import resolve_paths
from tests.browser import artifacts, launch, open_app, playwright, screenshots, skip_reason
from tests.daemons import Daemon, cli, start_daemon

pytestmark = [
    pytest.mark.process,
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
]

SECONDS = 4


def a_picture(seed: int, size: tuple[int, int] = (960, 640)) -> bytes:
    image = Image.new("RGB", size, (60 + seed * 40 % 180, 120 + seed * 23 % 120, 170))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=80)
    return out.getvalue()


def a_video() -> bytes:
    """A WebM (VP8) of SECONDS seconds at 10 frames a second, a colour a frame."""
    import av

    out = io.BytesIO()
    with av.open(out, "w", format="webm") as container:
        stream = container.add_stream("libvpx", rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for i in range(SECONDS * 10):
            frame = Image.new("RGB", (320, 240), (i * 6, 120, 220 - i * 5))
            for packet in stream.encode(av.VideoFrame.from_image(frame)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


def alice_with_an_album(daemons: list[Daemon], home: Path) -> tuple[Daemon, str, list[bytes]]:
    assert cli(home, "init", "--name", "Alice").returncode == 0
    alice = start_daemon(daemons, home)
    circle = alice.api("POST", "/circles", {"name": "family"})["id"]
    client = ApiClient(resolve_paths(home))
    photos = [a_picture(i) for i in range(3)]
    for i, data in enumerate(photos):
        client.post_multipart(
            "/moments",
            {"circle": circle, "text": f"day {i}"},
            [("photo", "p.jpg", data, "image/jpeg")],
        )
    client.post_multipart(
        "/moments",
        {"circle": circle, "text": "the sea"},
        [("file", "sea.webm", a_video(), "video/webm")],
    )
    return alice, circle, photos


@pytest.mark.timeout(200)
def test_gallery_by_day_downloads_a_caption_in_the_viewer_and_a_video_that_seeks(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    alice, circle, photos = alice_with_an_album(daemons, tmp_path / "alice")
    shots = artifacts(tmp_path)
    with playwright() as p:
        browser = launch(p)
        page = open_app(browser, alice.home)

        # A photo with a caption, from the composer; the viewer shows the caption.
        beach = tmp_path / "beach.jpg"
        beach.write_bytes(a_picture(7))
        page.locator('.composer input[type=file][accept="image/*"]:not([capture])').set_input_files(
            str(beach)
        )
        page.get_by_label("Caption for beach.jpg").fill("At the beach")
        page.get_by_role("button", name="Share").click()
        page.wait_for_function("() => document.querySelectorAll('.moment .photo').length === 4")
        page.locator(".moment .photo").first.click()
        viewer = page.locator("dialog.viewer")
        assert viewer.locator(".viewer-caption").inner_text() == "At the beach"
        page.keyboard.press("Escape")

        # A reaction shows as a picture the daemon serves, font or no emoji font.
        page.locator(".moment").first.get_by_role("button", name="React", exact=True).click()
        page.get_by_role("button", name="React with ❤️").first.click()
        heart = page.locator(".moment").first.locator(".reaction img.emoji")
        heart.wait_for()
        page.wait_for_function(
            """() => { const i = document.querySelector('.reaction img.emoji');
              return i.complete && i.naturalWidth > 0; }"""
        )
        assert heart.get_attribute("alt") == "❤️"

        # The video plays in the page and seeks: the browser asks for byte ranges.
        video = page.locator(".moment video")
        video.wait_for()
        page.wait_for_function(
            "() => document.querySelector('.moment video').readyState >= 1"
        )  # its metadata: the first frame shows
        duration = video.evaluate("v => v.duration")
        assert abs(duration - SECONDS) < 0.5
        played = video.evaluate(
            """async v => { v.muted = true; await v.play();
              await new Promise(r => v.addEventListener('timeupdate', r, {once: true}));
              v.pause(); return v.currentTime; }"""
        )
        assert played >= 0
        seeked = video.evaluate(
            """v => new Promise(r => {
              v.addEventListener('seeked', () => r(v.currentTime), {once: true});
              v.currentTime = 3; })"""
        )
        assert abs(seeked - 3) < 0.2
        # The player read ranges of the file (Playwright does not see media requests: the
        # page's own resource timing does).
        statuses = page.evaluate(
            """performance.getEntriesByType('resource')
              .filter(e => e.name.includes('/files/')).map(e => e.responseStatus)"""
        )
        assert 206 in statuses, statuses
        page.evaluate("window.scrollTo(0, 0)")
        screenshots(page, shots, "video")

        # The gallery: a header for the day, every photo as a thumbnail, newest first.
        page.goto(page.url.split("#")[0] + f"#/gallery/{circle}")
        page.locator(".gallery-day h2").first.wait_for()
        assert page.locator(".gallery-day h2").all_inner_texts() == ["Today"]
        tiles = page.locator(".gallery-grid .photo")
        assert tiles.count() == 4
        assert tiles.first.get_attribute("aria-label") == "Open photo from Alice: At the beach"
        page.wait_for_function(
            """() => [...document.querySelectorAll('.gallery-grid img')]
              .every(i => i.complete && i.naturalWidth > 0)"""
        )
        screenshots(page, shots, "gallery")

        # Posts of other days (a daemon posts at its own now, so the answer is aged on
        # its way to the page): a header for each day, each photo under its own.
        def aged(route: Any) -> None:
            answer = route.fetch().json()
            for i, photo in enumerate(answer["photos"]):
                photo["time"] -= [0, 86400, 86400, 40 * 86400][i]
            route.fulfill(json=answer)

        page.route("**/circles/*/photos?*", aged)
        page.reload()
        page.locator(".gallery-day h2").nth(2).wait_for()
        assert page.locator(".gallery-day h2").all_inner_texts()[:2] == ["Today", "Yesterday"]
        assert [d.locator(".photo").count() for d in page.locator(".gallery-day").all()] == [
            1,
            2,
            1,
        ]
        page.unroute("**/circles/*/photos?*")
        page.reload()
        page.locator(".gallery-day h2").first.wait_for()

        # Download one photo from the viewer: the photo as posted.
        tiles.nth(1).click()
        with page.expect_download() as one:
            viewer.get_by_label("Download this photo").click()
        assert Path(one.value.path()).read_bytes() == photos[2]  # newest first
        page.keyboard.press("Escape")

        # Download all: one zip of every photo.
        with page.expect_download() as everything:
            page.get_by_role("link", name="Download all").click()
        archive = zipfile.ZipFile(everything.value.path())
        assert len(archive.namelist()) == 4
        assert sorted(archive.read(n) for n in archive.namelist()[1:]) == sorted(photos)
        assert page.errors == []
        browser.close()
