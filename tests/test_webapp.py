"""The web app's server side: pages and their headers, login, sessions, CSRF, the event
stream and reading codes from images. Every response is checked against
spec/openapi.yaml (tests/test_api.py's spec_check); the browser tests are in
tests/test_webapp_browser.py."""

from __future__ import annotations

import asyncio
import io
import json
import re
import stat
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
import segno
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient
from PIL import Image

from p2pmoments import qr, webapp, webevents
from p2pmoments.api import API_PREFIX
from p2pmoments.node import Node
from tests.test_api import AUTH, SPEC_PATH, TOKEN, client, error_of, spec_check

__all__ = ["client"]  # the fixture, shared with tests/test_api.py

Client = TestClient[Any, Any]


async def login(client: Client) -> dict[str, str]:
    """Log in as a browser does; the headers a page's own requests carry."""
    link = await client.post(f"{API_PREFIX}/login-links", headers=AUTH)
    assert link.status == 201
    url = (await link.json())["url"]
    assert url.startswith(f"http://127.0.0.1:{client.port}/login?token=")
    answer = await client.get(url.split(str(client.port), 1)[1], allow_redirects=False)
    assert answer.status == 303
    assert answer.headers["Location"] == "/"
    cookie = SimpleCookie(answer.headers["Set-Cookie"])
    name = webapp.cookie_name(client.port)
    morsel = cookie[name]
    assert morsel["httponly"]
    assert morsel["samesite"] == "Strict"
    assert morsel["path"] == "/"
    client.session.cookie_jar.clear()  # each request below says which cookie it carries
    return {
        "Cookie": f"{name}={morsel.value}",
        "Host": f"127.0.0.1:{client.port}",
        "Origin": f"http://127.0.0.1:{client.port}",
        "Sec-Fetch-Site": "same-origin",
    }


async def csrf(client: Client, page: dict[str, str]) -> dict[str, str]:
    """The page's headers plus its CSRF token, as the app sends them with changes."""
    session = await client.get(f"{API_PREFIX}/session", headers=page)
    assert session.status == 200
    body = await session.json()
    assert body["via"] == "cookie"
    return {**page, webapp.CSRF_HEADER: body["csrf_token"]}


# --- pages and files ----------------------------------------------------------


async def app_path(client: Client, name: str) -> str:
    """Where the page says a file of the app is: /app/VERSION/NAME."""
    text = await (await client.get("/")).text()
    found = re.search(r'"/app/([0-9a-f]{12})/main\.js"', text)
    assert found is not None
    return f"/app/{found[1]}/{name}"


async def test_the_page_and_its_files_are_served_with_a_strict_policy(client: Client) -> None:
    page = await client.get("/")
    assert page.status == 200
    assert page.content_type == "text/html"
    assert page.headers["Cache-Control"] == "no-cache"
    text = await page.text()
    main = await app_path(client, "main.js")
    assert f'<script type="module" src="{main}"></script>' in text
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "default-src 'none'" in csp
    assert "unsafe-inline" not in csp
    assert "require-trusted-types-for 'script'" in csp
    assert "frame-ancestors 'none'" in csp
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Cross-Origin-Resource-Policy"] == "same-origin"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    script = await client.get(main, headers={"Sec-Fetch-Site": "same-origin"})
    assert script.status == 200
    assert script.content_type == "text/javascript"
    assert "immutable" in script.headers["Cache-Control"]  # the version is in its path
    again = await client.get(main, headers={"If-None-Match": script.headers["ETag"]})
    assert again.status == 304
    old = await client.get("/app/000000000000/main.js")
    assert old.status == 404


async def test_every_answer_for_the_page_carries_the_pages_policy(client: Client) -> None:
    """A browser merges a 304's headers into the page it cached: a 304 with the
    sandboxing policy made every reload, second tab and second login a dead page."""
    page = await client.get("/")
    revalidated = await client.get("/", headers={"If-None-Match": page.headers["ETag"]})
    assert revalidated.status == 304
    assert revalidated.headers["Content-Security-Policy"] == page.headers["Content-Security-Policy"]
    assert "sandbox" not in revalidated.headers["Content-Security-Policy"]
    assert revalidated.headers["Cache-Control"] == "no-cache"
    expired = await client.get("/login?token=nothing")  # a page of ours too
    assert expired.status == 403
    assert expired.headers["Content-Security-Policy"] == page.headers["Content-Security-Policy"]
    # Anything else is sandboxed, whatever its type: the app's scripts, the API.
    script = await client.get(await app_path(client, "main.js"))
    assert "sandbox" in script.headers["Content-Security-Policy"]


async def test_the_files_go_gzipped_to_a_browser_that_takes_gzip(client: Client) -> None:
    main = await app_path(client, "main.js")
    plain = await client.get(main, headers={"Accept-Encoding": "identity"})
    packed = await client.get(main, headers={"Accept-Encoding": "gzip, deflate, br, zstd"})
    assert "Content-Encoding" not in plain.headers
    assert packed.headers["Content-Encoding"] == "gzip"
    assert plain.headers["Vary"] == packed.headers["Vary"] == "Accept-Encoding"
    assert int(packed.headers["Content-Length"]) < int(plain.headers["Content-Length"]) / 2
    assert await packed.read() == await plain.read()  # the client unpacks it: the same file
    assert packed.headers["ETag"] != plain.headers["ETag"]
    declined = await client.get(main, headers={"Accept-Encoding": "gzip;q=0, identity"})
    assert "Content-Encoding" not in declined.headers
    # Revalidation is per encoding: one's ETag does not stand for the other.
    same = await client.get(
        main, headers={"Accept-Encoding": "gzip", "If-None-Match": packed.headers["ETag"]}
    )
    assert same.status == 304
    other = await client.get(
        main, headers={"Accept-Encoding": "identity", "If-None-Match": packed.headers["ETag"]}
    )
    assert other.status == 200
    assert "Content-Encoding" not in other.headers
    # The page too, every answer for it with the page's policy.
    page = await client.get("/", headers={"Accept-Encoding": "gzip"})
    assert page.headers["Content-Encoding"] == "gzip"
    assert page.headers["Content-Security-Policy"] == webapp.PAGE_CSP
    again = await client.get(
        "/", headers={"Accept-Encoding": "gzip", "If-None-Match": page.headers["ETag"]}
    )
    assert again.status == 304
    assert again.headers["Content-Security-Policy"] == webapp.PAGE_CSP
    assert again.headers["Vary"] == "Accept-Encoding"


async def test_no_inline_script_or_style_and_no_other_origin_in_the_files() -> None:
    folder = Path(webapp.__file__).parent / "web"
    assert sorted(p.name for p in folder.iterdir()) == sorted(webapp.ASSETS)
    index = (folder / "index.html").read_text()
    assert "<script>" not in index
    assert " style=" not in index
    assert not re.search(r"\son[a-z]+=", index)  # no onclick= and the like
    for name in webapp.ASSETS:
        text = (folder / name).read_text()
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in text, name
        assert "innerHTML" not in text, name
        assert "insertAdjacentHTML" not in text, name


@pytest.mark.parametrize("path", ["/", "/app/0/main.js", "/app/0/style.css", "/login?token=x"])
async def test_a_foreign_host_gets_no_page_either(client: Client, path: str) -> None:
    response = await client.get(path, headers={"Host": "evil.example:80"})
    assert response.status == 403
    assert (await error_of(response))["code"] == "forbidden_host"


async def test_unknown_files_are_not_served(client: Client) -> None:
    for name in ("nothing.js", "index.html", "webapp.py"):
        path = await app_path(client, name)
        response = await client.get(path, headers={"Sec-Fetch-Site": "same-origin"})
        assert response.status == 404, path
    elsewhere = await client.get("/secret.txt")
    assert elsewhere.status == 401


async def test_another_origin_cannot_load_the_files(client: Client) -> None:
    main = await app_path(client, "main.js")
    response = await client.get(main, headers={"Sec-Fetch-Site": "same-site"})
    assert response.status == 403
    # The page itself may be opened from anywhere (a link, the login redirect file).
    page = await client.get("/", headers={"Sec-Fetch-Site": "cross-site"})
    assert page.status == 200


# --- getting in ---------------------------------------------------------------


async def test_login_gives_a_session_that_reads_the_api(client: Client) -> None:
    page = await login(client)
    status = await client.get(f"{API_PREFIX}/status", headers=page)
    assert status.status == 200
    assert (await status.json())["name"] == "Alice"
    session = await (await client.get(f"{API_PREFIX}/session", headers=page)).json()
    assert len(session["csrf_token"]) == 64
    assert session["expires_at"] > 0
    bearer = await (await client.get(f"{API_PREFIX}/session", headers=AUTH)).json()
    assert bearer == {"via": "bearer", "csrf_token": None, "expires_at": None}


async def test_a_login_token_works_once(client: Client) -> None:
    link = await (await client.post(f"{API_PREFIX}/login-links", headers=AUTH)).json()
    path = link["url"].split(str(client.port), 1)[1]
    first = await client.get(path, allow_redirects=False)
    assert first.status == 303
    second = await client.get(path, allow_redirects=False)
    assert second.status == 403
    assert "Set-Cookie" not in second.headers
    assert "expired" in await second.text()
    for bad in ("/login", "/login?token=", "/login?token=" + "A" * 43):
        response = await client.get(bad, allow_redirects=False)
        assert response.status == 403
        assert "Set-Cookie" not in response.headers


async def test_an_expired_login_token_is_refused(client: Client) -> None:
    sessions = client.app[webapp.SESSIONS]
    link = await (await client.post(f"{API_PREFIX}/login-links", headers=AUTH)).json()
    real = sessions.clock
    sessions.clock = lambda: real() + webapp.LOGIN_TTL + 1
    response = await client.get(link["url"].split(str(client.port), 1)[1], allow_redirects=False)
    assert response.status == 403
    assert "Set-Cookie" not in response.headers


async def test_only_the_bearer_token_makes_login_links(client: Client) -> None:
    page = await csrf(client, await login(client))
    response = await client.post(f"{API_PREFIX}/login-links", headers=page)
    assert response.status == 403
    assert (await error_of(response))["code"] == "bearer_only"
    nobody = await client.post(f"{API_PREFIX}/login-links")
    assert nobody.status == 401


async def test_an_expired_session_is_refused(client: Client) -> None:
    page = await login(client)
    sessions = client.app[webapp.SESSIONS]
    real = sessions.clock
    sessions.clock = lambda: real() + webapp.SESSION_TTL + 1
    response = await client.get(f"{API_PREFIX}/status", headers=page)
    assert response.status == 401


async def test_logout_ends_the_session(client: Client) -> None:
    page = await csrf(client, await login(client))
    response = await client.delete(f"{API_PREFIX}/session", headers=page)
    assert response.status == 200
    assert await response.json() == {"ended": True}
    assert "Max-Age=0" in response.headers["Set-Cookie"]
    after = await client.get(f"{API_PREFIX}/status", headers=page)
    assert after.status == 401
    bearer = await client.delete(f"{API_PREFIX}/session", headers=AUTH)
    assert bearer.status == 400
    assert (await error_of(bearer))["code"] == "no_session"


async def test_sessions_outlive_a_restart_and_are_kept_hashed(
    node: Node, client: Client, aiohttp_client: Any
) -> None:
    page = await login(client)
    file = node.paths.web_sessions_file
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    cookie_value = page["Cookie"].split("=", 1)[1]
    assert cookie_value not in file.read_text()
    # The same daemon, started again on the same port: the page's cookie still works.
    port = client.port
    await client.close()
    app = webapp_app(node)
    server = await aiohttp_client(app, server_kwargs={"port": port})
    response = await server.get(f"{API_PREFIX}/status", headers=page)
    assert response.status == 200


def webapp_app(node: Node) -> web.Application:
    from p2pmoments.api import create_app

    app = create_app(node, TOKEN)
    app.middlewares.insert(0, spec_check)
    return app


# --- CSRF -----------------------------------------------------------------------


async def test_a_change_with_the_cookie_needs_the_csrf_token_and_our_origin(
    client: Client,
) -> None:
    page = await login(client)
    with_token = await csrf(client, page)
    no_token = await client.patch(f"{API_PREFIX}/profile", json={"name": "Mallory"}, headers=page)
    assert no_token.status == 403
    assert (await error_of(no_token))["code"] == "csrf"
    wrong = {**with_token, webapp.CSRF_HEADER: "0" * 64}
    wrong_token = await client.patch(
        f"{API_PREFIX}/profile", json={"name": "Mallory"}, headers=wrong
    )
    assert wrong_token.status == 403
    no_origin = {k: v for k, v in with_token.items() if k != "Origin"}
    missing = await client.patch(
        f"{API_PREFIX}/profile", json={"name": "Mallory"}, headers=no_origin
    )
    assert missing.status == 403
    assert (await error_of(missing))["code"] == "forbidden_origin"
    for origin in ("http://127.0.0.1:1", "http://localhost:8888", "null"):
        other = await client.patch(
            f"{API_PREFIX}/profile",
            json={"name": "Mallory"},
            headers={**with_token, "Origin": origin},
        )
        assert other.status == 403, origin
        assert (await error_of(other))["code"] == "forbidden_origin"
    name = (await (await client.get(f"{API_PREFIX}/profile", headers=page)).json())["name"]
    assert name == "Alice"
    ok = await client.patch(f"{API_PREFIX}/profile", json={"name": "Alice B."}, headers=with_token)
    assert ok.status == 200
    assert (await ok.json())["name"] == "Alice B."


async def test_a_read_with_the_cookie_from_another_site_is_refused(client: Client) -> None:
    page = await login(client)
    for site in ("same-site", "cross-site"):
        response = await client.get(
            f"{API_PREFIX}/moments", headers={**page, "Sec-Fetch-Site": site}
        )
        assert response.status == 403
        assert (await error_of(response))["code"] == "forbidden_origin"


def _operations() -> list[tuple[str, str]]:
    spec = yaml.safe_load(SPEC_PATH.read_text())
    out = []
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in {"get", "post", "patch", "delete"} and operation.get("security") != []:
                out.append((method, path))
    return out


@pytest.mark.parametrize(("method", "path"), _operations())
async def test_without_cookie_or_token_every_api_path_is_refused(
    client: Client, method: str, path: str
) -> None:
    url = API_PREFIX + path.replace("{ref}", "Bob").replace("{id}", "abcdefgh").replace("{n}", "1")
    response = await client.request(method.upper(), url, json={})
    assert response.status == 401
    stale = {"Cookie": f"{webapp.cookie_name(client.port)}=made-up"}
    response = await client.request(method.upper(), url, json={}, headers=stale)
    assert response.status == 401


# --- the event stream ---------------------------------------------------------


class Stream:
    """Reads Server-Sent Events from a response."""

    def __init__(self, response: Any) -> None:
        self.response = response

    async def next(self, timeout: float = 10) -> dict[str, str]:
        fields: dict[str, str] = {}
        async with asyncio.timeout(timeout):
            while True:
                line = (await self.response.content.readline()).decode().rstrip("\n")
                if not line:
                    if fields:
                        return fields
                    continue
                if line.startswith(":"):
                    continue
                name, _, value = line.partition(": ")
                fields[name] = value


@pytest.fixture
async def stream_of(client: Client) -> AsyncIterator[Any]:
    opened = []

    async def open_stream(headers: dict[str, str], query: str = "") -> Stream:
        response = await client.get(f"{API_PREFIX}/events/stream{query}", headers=headers)
        opened.append(response)
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        return Stream(response)

    yield open_stream
    for response in opened:
        response.close()


async def test_events_stream_live_and_resume(client: Client, node: Node, stream_of: Any) -> None:
    page = await login(client)
    stream = await stream_of(page)
    retry = await stream.next()
    assert retry == {"retry": "2000"}
    hello = await stream.next()
    assert hello["event"] == "hello"
    boot = json.loads(hello["data"])["boot"]
    node.events.publish("friend.renamed", name="Bobby")
    event = await stream.next()
    data = json.loads(event["data"])
    assert (data["kind"], data["data"]) == ("friend.renamed", {"name": "Bobby"})
    assert event["id"] == f"{boot}-{data['id']}"
    # A browser reconnecting after a cut says where it was, and gets what it missed.
    node.events.publish("friend.renamed", name="Robert")
    again = await stream_of({**page, "Last-Event-ID": event["id"]})
    await again.next()  # retry
    assert (await again.next())["event"] == "hello"
    missed = json.loads((await again.next())["data"])
    assert missed["data"] == {"name": "Robert"}


async def test_a_stream_from_another_run_of_the_daemon_is_told_of_the_gap(
    client: Client, stream_of: Any
) -> None:
    stream = await stream_of(AUTH | {"Last-Event-ID": "0000dead-7"})
    await stream.next()
    assert (await stream.next())["event"] == "gap"


async def test_a_stream_does_not_hold_up_stopping(client: Client, stream_of: Any) -> None:
    stream = await stream_of(AUTH)
    await stream.next()
    async with asyncio.timeout(3):  # far less than the runner's 5 s shutdown grace
        await client.server.runner.cleanup()
    rest = await stream.response.content.read()  # the stream ended: read() returns
    assert rest.startswith(b"event: hello")


async def test_event_streams_are_bounded_per_session_so_none_starves(
    client: Client, stream_of: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 18: a page over its session's bound is told so (429, Retry-After); when all
    are taken, a newcomer gets in and the session holding the most gives up its oldest."""
    monkeypatch.setattr(webevents, "MAX_STREAMS", 4)
    monkeypatch.setattr(webevents, "MAX_STREAMS_PER_SESSION", 3)
    hog, other = await login(client), await login(client)
    held = [await stream_of(hog) for _ in range(3)]
    for stream in held:
        await stream.next()
    refused = await client.get(f"{API_PREFIX}/events/stream", headers=hog)
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "10"
    assert (await refused.json())["error"]["code"] == "too_many_streams"
    await stream_of(AUTH)  # the bearer token's holders are a session of their own
    mine = await stream_of(other)  # all 4 taken: the hog's oldest makes room
    await mine.next()
    async with asyncio.timeout(5):
        assert b"event: hello" in await held[0].response.content.read()  # it ended
    assert not held[1].response.content.at_eof()
    again = await client.get(f"{API_PREFIX}/events/stream", headers=hog)
    assert again.status == 429  # it holds as many as anyone: it waits


async def test_the_stream_refuses_a_bad_after(client: Client) -> None:
    response = await client.get(f"{API_PREFIX}/events/stream?after=x", headers=AUTH)
    assert response.status == 400


async def test_a_comment_event_names_its_moment(node: Node) -> None:
    await node.circles.create("us", [], True)
    post = await node.posting.post("us", "hello", None)
    comment = await node.posting.comment(_text(post.id), "hi")
    events, _ = node.events.after(0)
    added = [e.data for e in events if e.kind == "moment.added"]
    assert added[-1] == {
        "id": _text(comment.id),
        "circle": added[0]["circle"],
        "kind": "comment",
        "reply_to": _text(post.id),
    }
    assert "reply_to" not in added[0]


def _text(moment_id: bytes) -> str:
    from p2pmoments.views import moment_text

    return moment_text(moment_id)


# --- reading codes from images ------------------------------------------------


def _code_png(text: str, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    segno.make(text, error="m").save(out, kind="png", scale=6, border=4)
    if fmt == "PNG":
        return out.getvalue()
    image = Image.open(io.BytesIO(out.getvalue())).convert("RGB")
    converted = io.BytesIO()
    image.save(converted, format=fmt)
    return converted.getvalue()


async def test_a_photo_of_a_code_is_read_by_the_daemon(client: Client, node: Node) -> None:
    link, _ = await node.pairings.new_code()
    for fmt, media_type in (("PNG", "image/png"), ("JPEG", "image/jpeg")):
        response = await client.post(
            f"{API_PREFIX}/pairing/decode",
            data=_code_png(link, fmt),
            headers={**AUTH, "Content-Type": media_type},
        )
        assert response.status == 200
        assert await response.json() == {"links": [link], "codes": 1}
    other = await client.post(
        f"{API_PREFIX}/pairing/decode",
        data=_code_png("https://example.org/"),
        headers={**AUTH, "Content-Type": "image/png"},
    )
    assert await other.json() == {"links": [], "codes": 1}


@pytest.mark.parametrize(
    ("body", "media_type", "status", "code"),
    [
        (b"not an image", "image/png", 400, "not_an_image"),
        (b"", "image/jpeg", 400, "not_an_image"),
        (b"{}", "application/json", 415, "unsupported_media_type"),
    ],
)
async def test_bad_images_get_clean_errors(
    client: Client, body: bytes, media_type: str, status: int, code: str
) -> None:
    response = await client.post(
        f"{API_PREFIX}/pairing/decode", data=body, headers={**AUTH, "Content-Type": media_type}
    )
    assert response.status == status
    assert (await error_of(response))["code"] == code


async def test_a_decompression_bomb_is_refused_unread(client: Client) -> None:
    out = io.BytesIO()
    Image.new("1", (8_000, 8_000)).save(out, format="PNG")
    response = await client.post(
        f"{API_PREFIX}/pairing/decode",
        data=out.getvalue(),
        headers={**AUTH, "Content-Type": "image/png"},
    )
    assert response.status == 400
    assert "too large" in (await error_of(response))["message"]


async def test_an_oversized_image_is_refused(client: Client) -> None:
    response = await client.post(
        f"{API_PREFIX}/pairing/decode",
        data=b"\0" * (webapp.MAX_IMAGE + 1),
        headers={**AUTH, "Content-Type": "image/png"},
    )
    assert response.status == 413


def test_secrets_stay_out_of_reprs(tmp_path: Path) -> None:
    sessions = webapp.Sessions(tmp_path / "s.json")
    token, _ = sessions.new_login()
    assert token not in repr(sessions)


async def test_a_code_to_show_comes_with_its_own_picture(client: Client) -> None:
    response = await client.get(f"{API_PREFIX}/pairing/code", headers=AUTH)
    assert response.status == 200
    code = await response.json()
    assert code["svg"].encode() == qr.render_svg(code["link"])  # the picture is that link
