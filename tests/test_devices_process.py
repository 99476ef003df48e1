"""Linking a device with the CLI, real daemon processes (spec/devices.md section 10): Alice
shows a device link on her laptop, her desktop joins by it instead of `init`, and from
then on it is Alice: it reads the family circle, posts as her, and Bob (who does
nothing) sees one Alice."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from p2pmoments.core.recovery import decode_sheet
from p2pmoments.paths import resolve_paths
from tests.daemons import Daemon, cli, wait_for

pytestmark = pytest.mark.process


def start(daemons: list[Daemon], home: Path) -> Daemon:
    daemon = Daemon(home, mdns=True)
    daemons.append(daemon)
    daemon.wait_ready()
    return daemon


def feed(home: Path) -> dict[str, Any]:
    moments = json.loads(cli(home, "feed", "--json", "--all").stdout)["moments"]
    return {m["text"]: m for m in moments}


@pytest.mark.timeout(240)
def test_a_device_joins_by_link_and_posts_as_its_person(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    laptop, bob, desktop = (tmp_path / n for n in ("laptop", "bob", "desktop"))
    assert cli(laptop, "init", "--name", "Alice").returncode == 0
    assert cli(bob, "init", "--name", "Bob").returncode == 0
    start(daemons, laptop)
    start(daemons, bob)
    assert cli(bob, "pair", cli(laptop, "qr", "--link").stdout.strip()).returncode == 0
    made = cli(laptop, "circle", "create", "family", "--member", "Bob", "--members-can-post")
    assert made.returncode == 0, made.stderr
    assert cli(laptop, "post", "--circle", "family", "from the laptop").returncode == 0
    wait_for(lambda: "from the laptop" in feed(bob), timeout=30, what="the laptop's post at Bob's")
    assert cli(bob, "post", "--circle", "family", "from Bob").returncode == 0

    shown = cli(laptop, "devices", "link")
    assert shown.returncode == 0, shown.stderr
    link = re.search(r"P2PD:\S+", shown.stdout)
    assert link is not None, shown.stdout
    joined = cli(desktop, "devices", "join", link.group(), "--name", "desktop")
    assert joined.returncode == 0, joined.stderr
    assert "Alice's device 'desktop'" in joined.stdout
    shown_code = re.search(r"Code: (\d{3}) (\d{3})", joined.stdout)
    assert shown_code is not None, joined.stdout
    start(daemons, desktop)

    def devices(home: Path) -> list[str]:
        answer = cli(home, "devices", "--json")
        return sorted(d["name"] for d in json.loads(answer.stdout)["devices"])

    # The laptop asks before it links it: the request shows the digits the desktop
    # showed (spec/devices.md section 10); a wrong code links nothing.
    def requests() -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = json.loads(cli(laptop, "devices", "--json").stdout)[
            "requests"
        ]
        return answer

    asked = wait_for(requests, timeout=60, what="the desktop's request at the laptop")
    assert [(r["name"], r["code"]) for r in asked] == [("desktop", "".join(shown_code.groups()))]
    assert "asks to be linked" in cli(laptop, "devices").stdout
    waiting = cli(desktop, "devices").stdout  # the new device says what to confirm
    assert f"confirm the code {' '.join(shown_code.groups())}" in waiting, waiting
    assert devices(laptop) == ["first device"]  # not linked before it is confirmed
    wrong = cli(laptop, "devices", "confirm", "000000" if asked[0]["code"] != "000000" else "1")
    assert wrong.returncode == 1
    confirmed = cli(laptop, "devices", "confirm", " ".join(shown_code.groups()))
    assert confirmed.returncode == 0, confirmed.stderr
    wait_for(lambda: "desktop" in devices(laptop), timeout=60, what="the laptop to link it")
    wait_for(lambda: len(devices(desktop)) == 2, timeout=30, what="the desktop to be Alice's")
    assert json.loads(cli(desktop, "status", "--json").stdout)["name"] == "Alice"
    wait_for(
        lambda: {"from the laptop", "from Bob"} <= set(feed(desktop)),
        timeout=60,
        what="the desktop to read the family circle",
    )
    assert feed(desktop)["from Bob"]["author"]["name"] == "Bob"
    assert feed(desktop)["from the laptop"]["author"]["name"] == "Alice"

    assert cli(desktop, "post", "--circle", "family", "from the desktop").returncode == 0
    wait_for(lambda: "from the desktop" in feed(laptop), timeout=60, what="it at the laptop")
    wait_for(lambda: "from the desktop" in feed(bob), timeout=60, what="it at Bob's")
    assert feed(bob)["from the desktop"]["author"]["name"] == "Alice"  # one Alice
    assert [f["name"] for f in json.loads(cli(bob, "friends", "--json").stdout)["friends"]] == [
        "Alice"
    ]
    # Carol pairs with the desktop (not the first device): a friend of Alice's, on
    # both of Alice's devices, and one Alice at Carol's (spec/devices.md section 8.1).
    carol = tmp_path / "carol"
    assert cli(carol, "init", "--name", "Carol").returncode == 0
    start(daemons, carol)
    code = cli(desktop, "qr", "--link")
    assert code.returncode == 0, code.stderr
    paired = cli(carol, "pair", code.stdout.strip())
    assert paired.returncode == 0, paired.stderr

    def friends(home: Path) -> list[str]:
        answer = json.loads(cli(home, "friends", "--json").stdout)["friends"]
        return sorted(f["name"] for f in answer)

    wait_for(lambda: friends(carol) == ["Alice"], timeout=30, what="one Alice at Carol's")
    wait_for(lambda: "Carol" in friends(laptop), timeout=30, what="Carol on the laptop")
    assert "Carol" in friends(desktop)
    made = cli(carol, "circle", "create", "book club", "--member", "Alice")
    assert made.returncode == 0, made.stderr
    assert cli(carol, "post", "--circle", "book club", "from Carol").returncode == 0
    for home in (laptop, desktop):
        wait_for(lambda h=home: "from Carol" in feed(h), timeout=60, what="Carol's post")  # type: ignore[misc]
        assert feed(home)["from Carol"]["author"]["name"] == "Carol"

    # The link worked once.
    again = cli(tmp_path / "other", "devices", "join", link.group(), "--name", "thief")
    assert again.returncode == 0  # the home is made; its daemon will be refused
    listing = cli(laptop, "devices")
    assert "desktop" in listing.stdout
    assert "this device" in listing.stdout

    # Renamed on one device, renamed on all; then the desktop is lost, and revoked.
    assert cli(laptop, "devices", "rename", "desktop", "old desktop").returncode == 0
    wait_for(lambda: "old desktop" in devices(desktop), timeout=30, what="the new name there")
    revoked = cli(laptop, "devices", "revoke", "old desktop")
    assert revoked.returncode == 0, revoked.stderr
    assert "What it already had, it keeps" in revoked.stdout
    assert devices(laptop) == ["first device"]
    assert cli(desktop, "post", "--circle", "family", "after the revocation").returncode == 0
    assert cli(laptop, "post", "--circle", "family", "after, from the laptop").returncode == 0
    wait_for(lambda: "after, from the laptop" in feed(bob), timeout=60, what="the laptop's post")
    assert "after the revocation" not in feed(bob)
    assert "after the revocation" not in feed(laptop)
    bad = cli(laptop, "devices", "revoke", "nothing")
    assert bad.returncode == 1
    assert "no single device of yours" in bad.stderr


@pytest.mark.timeout(240)
def test_the_web_app_links_lists_and_revokes_a_device(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    """Me → Devices → Link a device: a QR code (read back here with zxing-cpp) and the
    command with the link; the new device appears in the list live once it joins; then
    it is revoked from the page."""
    from tests.browser import launch, open_app, playwright, skip_reason

    if skip_reason() is not None:
        pytest.skip(skip_reason() or "")
    import io

    import zxingcpp
    from PIL import Image

    laptop, desktop = tmp_path / "laptop", tmp_path / "desktop"
    assert cli(laptop, "init", "--name", "Alice").returncode == 0
    start(daemons, laptop)
    with playwright() as p:
        browser = launch(p)
        page = open_app(browser, laptop)
        page.goto(page.url.split("#")[0] + "#/me")
        card = page.locator("section", has=page.get_by_role("heading", name="Devices"))
        card.locator("[data-device='first device']").wait_for()
        card.get_by_role("button", name="Link a device").click()
        field = card.locator("[data-device-link]")
        field.wait_for()
        link = field.get_attribute("data-device-link")
        assert link is not None
        assert link.startswith("P2PD:1/")
        shot = card.locator("img.qr").screenshot()
        found = zxingcpp.read_barcodes(Image.open(io.BytesIO(shot)))
        assert [r.text for r in found] == [link]

        joined = cli(desktop, "devices", "join", link, "--name", "desktop")
        assert joined.returncode == 0
        shown_code = re.search(r"Code: (\d{3}) (\d{3})", joined.stdout)
        assert shown_code is not None, joined.stdout
        start(daemons, desktop)
        # The page asks, with the digits the desktop shows, before it links it.
        asking = card.locator(f"[data-join-code='{''.join(shown_code.groups())}']")
        asking.wait_for()  # live: no reload
        assert " ".join(shown_code.groups()) in asking.inner_text()
        asking.get_by_role("button", name="Link it").click()
        asking.wait_for(state="detached")
        row = card.locator("[data-device='desktop']")
        row.wait_for()  # live: no reload
        page.on("dialog", lambda dialog: dialog.accept())
        row.get_by_role("button", name="Revoke").click()
        row.wait_for(state="detached")
        names = [d["name"] for d in json.loads(cli(laptop, "devices", "--json").stdout)["devices"]]
        assert names == ["first device"]
        # Recovery: the sheet is made once, shown, and can be saved as a file.
        card.get_by_role("button", name="Make a recovery sheet").click()
        shown = card.locator("pre[data-sheet]")
        shown.wait_for()
        sheet = shown.get_attribute("data-sheet")
        assert sheet is not None
        assert decode_sheet(shown.inner_text()) == decode_sheet(sheet)
        assert card.get_by_role("link", name="Save it as a file").is_visible()
        page.reload()
        card.locator("[data-recovery='set']").wait_for()  # shown once: never again
        assert page.errors == []
        browser.close()
    names = [d["name"] for d in json.loads(cli(laptop, "devices", "--json").stdout)["devices"]]
    assert names == ["first device", "recovery sheet"]  # the sheet's device, never linked


@pytest.mark.timeout(300)
def test_restoring_from_the_recovery_sheet_after_losing_laptop_and_desktop(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    """Alice (laptop, her first device, and a desktop linked to it) makes her recovery
    sheet; both machines are lost. On a new home, `recover` from the sheet's file:
    Bob is her friend again, both circles are back with their moments, and `recover
    --revoke-others` revokes the laptop and the desktop, whose links Bob then refuses."""
    laptop, bob, desktop, new = (tmp_path / n for n in ("laptop", "bob", "desktop", "new"))
    assert cli(laptop, "init", "--name", "Alice").returncode == 0
    assert cli(bob, "init", "--name", "Bob").returncode == 0
    running = {"laptop": start(daemons, laptop), "bob": start(daemons, bob)}
    assert cli(bob, "pair", cli(laptop, "qr", "--link").stdout.strip()).returncode == 0
    made = cli(laptop, "circle", "create", "family", "--member", "Bob", "--members-can-post")
    assert made.returncode == 0, made.stderr
    made = cli(bob, "circle", "create", "pub", "--member", "Alice", "--members-can-post")
    assert made.returncode == 0, made.stderr
    assert cli(laptop, "post", "--circle", "family", "from the laptop").returncode == 0
    wait_for(lambda: "from the laptop" in feed(bob), timeout=30, what="Alice's post at Bob's")
    wait_for(
        lambda: cli(bob, "post", "--circle", "pub", "from Bob").returncode == 0,
        timeout=30,
        what="Bob's circle to be made",
    )
    link = re.search(r"P2PD:\S+", cli(laptop, "devices", "link", "--yes").stdout)
    assert link is not None
    assert cli(desktop, "devices", "join", link.group(), "--name", "desktop").returncode == 0
    running["desktop"] = start(daemons, desktop)
    wait_for(lambda: "from Bob" in feed(desktop), timeout=60, what="the desktop to read")

    sheet_file = tmp_path / "sheet.txt"
    shown = cli(laptop, "recovery", "--save", str(sheet_file))
    assert shown.returncode == 0, shown.stderr
    assert "outranks all of them" in shown.stdout
    assert oct(sheet_file.stat().st_mode & 0o777) == "0o600"
    assert "already" in cli(laptop, "recovery").stdout  # made once
    # Bob holds the roster naming the recovery sheet's device before the loss.
    wait_for(
        lambda: "recovery sheet" in cli(desktop, "devices").stdout,
        timeout=30,
        what="the roster to reach Alice's desktop",
    )
    for name in ("laptop", "desktop"):
        assert running[name].stop() == 0

    restored = cli(new, "recover", str(sheet_file), "--name", "Alice", "--device", "phone")
    assert restored.returncode == 0, restored.stderr
    start(daemons, new)
    wait_for(
        lambda: (
            [f["name"] for f in json.loads(cli(new, "friends", "--json").stdout)["friends"]]
            == ["Bob"]
        ),
        timeout=60,
        what="Bob to be Alice's friend again",
    )
    wait_for(
        lambda: {"from the laptop", "from Bob"} <= set(feed(new)),
        timeout=60,
        what="both circles' moments back",
    )
    circles = json.loads(cli(new, "circles", "--json").stdout)
    assert sorted(c["name"] for c in circles) == ["family", "pub"]
    progress = cli(new, "recover")
    assert "Your other devices: desktop, first device" in progress.stdout

    revoked = cli(new, "recover", "--revoke-others")
    assert revoked.returncode == 0, revoked.stderr
    assert "'desktop', 'first device'" in revoked.stdout
    names = [d["name"] for d in json.loads(cli(new, "devices", "--json").stdout)["devices"]]
    assert names == ["phone"]
    assert not resolve_paths(new).sheet_file.exists()  # R is on no device any more
    assert cli(new, "post", "--circle", "pub", "from the phone").returncode == 0
    wait_for(lambda: "from the phone" in feed(bob), timeout=60, what="the phone's post")
    assert feed(bob)["from the phone"]["author"]["name"] == "Alice"
    assert feed(bob)["from the laptop"]["author"]["name"] == "Alice"  # old posts stay hers

    # The desktop, found again, posts: Bob refuses it; the phone does not take it.
    start(daemons, desktop)
    assert cli(desktop, "post", "--circle", "pub", "from the found desktop").returncode == 0
    assert cli(new, "post", "--circle", "pub", "after it was found").returncode == 0
    wait_for(lambda: "after it was found" in feed(bob), timeout=60, what="the phone's post")
    assert "from the found desktop" not in feed(bob)
    assert "from the found desktop" not in feed(new)
