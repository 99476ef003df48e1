"""`p2pmoments open` against a real daemon: a login link that works once, a redirect
file only we can read, and no token in the browser's command line."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.daemons import Daemon, cli

pytestmark = pytest.mark.process


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def _status(url: str) -> tuple[int, str]:
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(url, timeout=10) as response:
            return response.status, response.headers.get("Set-Cookie", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Set-Cookie", "")


def cli_with_env(home: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "p2pmoments", "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "P2PMOMENTS_HOME": "", **env},
    )


@pytest.fixture
def alice(tmp_path: Path, daemons: list[Daemon]) -> Daemon:
    home = tmp_path / "alice"
    assert cli(home, "init", "--name", "Alice").returncode == 0
    daemons.append(Daemon(home))
    daemons[-1].wait_ready()
    return daemons[-1]


def test_open_print_gives_a_link_that_logs_in_once(alice: Daemon) -> None:
    printed = cli(alice.home, "open", "--print")
    assert printed.returncode == 0, printed.stderr
    url = printed.stdout.strip()
    assert url.startswith(alice.info["api_url"].replace("/api/v1", "/login?token="))
    assert "logs you in once" in printed.stderr
    status, cookie = _status(url)
    assert status == 303
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    again, cookie = _status(url)
    assert again == 403
    assert cookie == ""
    assert "token=" not in alice.output  # the daemon's log never shows it


def test_open_hands_the_browser_a_private_file_not_the_token(alice: Daemon, tmp_path: Path) -> None:
    record = tmp_path / "browser.json"
    browser = tmp_path / "browser.py"
    browser.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "from urllib.parse import urlparse, unquote\n"
        "path = unquote(urlparse(sys.argv[1]).path)\n"
        f"json.dump({{'argv': sys.argv, 'mode': os.stat(path).st_mode,"
        f" 'page': open(path).read()}}, open({str(record)!r}, 'w'))\n"
    )
    browser.chmod(0o755)
    opened = cli_with_env(alice.home, {"BROWSER": str(browser)}, "open")
    assert opened.returncode == 0, opened.stderr
    assert "Opened Moments in your browser" in opened.stdout
    seen = json.loads(record.read_text())
    assert seen["argv"][1].startswith("file://")
    assert "token" not in " ".join(seen["argv"])
    assert stat.S_IMODE(seen["mode"]) == 0o600
    assert 'http-equiv="refresh"' in seen["page"]
    url = seen["page"].split("url=", 1)[1].split('"', 1)[0].replace("&amp;", "&")
    assert _status(url)[0] == 303


def test_run_says_how_to_open_the_app(alice: Daemon) -> None:
    assert "open    (--print for a login link)" in alice.output


def test_open_without_a_daemon_says_so(tmp_path: Path) -> None:
    home = tmp_path / "nobody"
    assert cli(home, "init", "--name", "Nobody").returncode == 0
    answer = cli(home, "open", "--print")
    assert answer.returncode == 1
    assert "no daemon is running" in answer.stderr
