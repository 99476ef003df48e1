"""How the daemon serves the browser, tried in a real Chromium against real daemon
processes (issue 18, items 1 and 2): a hostile co-member's pages, scripts and "photos"
run no script of theirs, whichever way they are opened; and the app survives a reload,
a second tab and a second login in one browser profile. Skipped, saying why, where
Chromium or Playwright is missing."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p2pmoments.client import ApiClient
from p2pmoments.paths import resolve_paths
from tests.browser import TIMEOUT_MS, launch, login_url, open_app, playwright, skip_reason
from tests.daemons import Daemon, cli, wait_for

pytestmark = [
    pytest.mark.process,
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
]


def start(daemons: list[Daemon], home: Path, name: str, module: str = "p2pmoments") -> Daemon:
    assert cli(home, "init", "--name", name).returncode == 0
    daemon = Daemon(home, module=module)
    daemons.append(daemon)
    daemon.wait_ready()
    return daemon


@pytest.fixture
def listener() -> Iterator[tuple[int, list[str]]]:
    """A server on loopback that records every request: none may reach it."""
    hits: list[str] = []

    class Record(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(204)
            self.end_headers()

        do_POST = do_GET

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Record)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def the_app_works(page: Any) -> None:
    """The page ran the app: its view is drawn, not the no-script message."""
    page.wait_for_selector("main .view-title")
    assert page.get_by_text("needs JavaScript").count() == 0


def texts_at(home: Path) -> dict[str, Any]:
    feed = json.loads(cli(home, "feed", "--json", "--all").stdout)["moments"]
    return {m["text"]: m for m in feed}


def open_as_a_page(context: Any, url: str) -> str:
    """Open `url` in a new tab as a person would ("open in new tab"); what came of it."""
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    try:
        # Chromium aborts a navigation that becomes a download.
        with page.expect_download(timeout=5000) as download, contextlib.suppress(Exception):
            page.goto(url)
        return f"download {download.value.suggested_filename}"
    except Exception:
        return f"shown {page.content()[:200]}"
    finally:
        page.close()


@pytest.mark.timeout(300)
def test_a_hostile_members_pages_scripts_and_photos_run_nothing(
    tmp_path: Path, daemons: list[Daemon], listener: tuple[int, list[str]]
) -> None:
    port, hits = listener
    alice_home, mallory_home = tmp_path / "alice", tmp_path / "mallory"
    start(daemons, alice_home, "Alice")
    start(daemons, mallory_home, "Mallory", module="tests.hostile_daemon")
    assert cli(mallory_home, "pair", cli(alice_home, "qr", "--link").stdout.strip()).returncode == 0
    created = cli(
        alice_home, "circle", "create", "family", "--member", "Mallory", "--members-can-post"
    )
    assert created.returncode == 0, created.stderr
    wait_for(
        lambda: "family" in cli(mallory_home, "circles").stdout,
        timeout=30,
        what="Mallory to be in family",
    )

    # What the script does if it ever runs as Alice: mark the browser, call home, and
    # post as her with her session's CSRF token.
    script = (
        "localStorage.setItem('canary', '1'); window.canary = 1;"
        f"fetch('http://127.0.0.1:{port}/script-ran', {{mode: 'no-cors'}});"
        "fetch('/api/v1/session').then(r => r.json()).then(s => fetch('/api/v1/moments', {"
        "method: 'POST', headers: {'X-CSRF-Token': s.csrf_token,"
        " 'Content-Type': 'application/json'},"
        " body: JSON.stringify({circle: 'family', text: 'pwned'})}));"
    ).encode()
    mallory = ApiClient(resolve_paths(mallory_home))
    script_id = mallory.post_multipart(
        "/moments",
        {"circle": "family", "text": "a script"},
        [("file", "canary.js", script, "text/javascript")],
    )["id"]
    loader = (
        f'<script src="/api/v1/moments/{script_id}/files/1"></script>'
        f'<img src="http://127.0.0.1:{port}/page-img">'
    ).encode()
    svg = (
        b'<svg xmlns="http://www.w3.org/2000/svg" onload="localStorage.setItem(\'canary\', 1)">'
        b'<script href="/api/v1/moments/' + script_id.encode() + b'/files/1"/></svg>'
    )
    page_id = mallory.post_multipart(
        "/moments",
        {"circle": "family", "text": "a page"},
        [("file", "party.html", loader, "text/html"), ("file", "x.js", script, "text/javascript")],
    )["id"]
    photo_ids = [
        mallory.post_multipart(
            "/moments", {"circle": "family", "text": f"photo {n}"}, [("photo", name, data, "x/y")]
        )["id"]
        for n, (name, data) in enumerate((("a.html", loader), ("b.svg", svg)))
    ]
    assert cli(mallory_home, "post", "--circle", "family", "after").returncode == 0

    def arrived() -> bool:
        held = texts_at(alice_home)
        return {"a script", "a page", "after"} <= set(held) and all(
            f["chunks_held"] == f["chunks"] for m in held.values() for f in m["files"]
        )

    wait_for(arrived, timeout=60, what="Mallory's moments at Alice's")

    with playwright() as p:
        browser = launch(p)
        page = open_app(browser, alice_home)
        context = page.context
        # Every link the app offers for them: each file is a download.
        for text, count in (("a script", 1), ("a page", 2)):
            links = page.locator(".moment", has_text=text).locator("a[download]")
            links.first.wait_for()
            assert links.count() == count
            for i in range(count):
                with page.expect_download() as download:
                    links.nth(i).click()
                assert download.value.suggested_filename in ("canary.js", "party.html", "x.js")
        # Each address opened as a page: downloads, or Alice's daemon's "no such moment".
        api = page.url.split("#")[0].rstrip("/") + "/api/v1/moments"
        urls = [
            f"{api}/{script_id}/files/1",
            f"{api}/{page_id}/files/1",
            f"{api}/{page_id}/files/2",
        ]
        for moment_id in photo_ids:
            urls += [f"{api}/{moment_id}/photos/1", f"{api}/{moment_id}/photos/1/thumbnail"]
        outcomes = [open_as_a_page(context, url) for url in urls]
        # Nothing of theirs ran (the tabs share the app's storage), and the app's own
        # page still works.
        assert page.evaluate("localStorage.getItem('canary')") is None
        page.reload()
        the_app_works(page)
        assert page.evaluate("window.canary") is None
        assert page.errors == []
        assert [o.split()[0] for o in outcomes[:3]] == ["download"] * 3, outcomes
        for outcome in outcomes[3:]:
            assert outcome.startswith("shown"), outcome
            assert "not_found" in outcome, outcome
        browser.close()
    assert hits == []
    held = texts_at(alice_home)
    assert "pwned" not in held
    assert "photo 0" not in held  # refused when they arrived
    assert "photo 1" not in held


@pytest.mark.timeout(180)
def test_the_app_survives_a_reload_a_second_tab_and_a_second_login_in_one_profile(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    """Each test used a fresh browser context, so none saw the cache revalidate the page
    (a 304 with the sandboxing policy made every later visit a dead page): this one
    keeps one profile throughout."""
    home = tmp_path / "alice"
    start(daemons, home, "Alice")
    with playwright() as p:
        browser = launch(p)
        page = open_app(browser, home)
        context = page.context
        the_app_works(page)
        for _ in range(2):  # F5, twice: the second revalidates what the first cached
            page.reload()
            the_app_works(page)
        second = context.new_page()
        second.set_default_timeout(TIMEOUT_MS)
        second.goto(page.url)
        the_app_works(second)
        third = context.new_page()  # `p2pmoments open` again, in the same browser
        third.set_default_timeout(TIMEOUT_MS)
        third.goto(login_url(home))
        the_app_works(third)
        third.goto(third.url.split("#")[0] + "#/friends")
        third.wait_for_selector("main .view-title")
        assert page.errors == []
        browser.close()
