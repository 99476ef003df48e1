"""Makes tests/data/store-vN.tar.gz: two homes as the daemon of schema N left them.

    python tests/make_old_stores.py            # every schema in SCHEMAS not yet in tests/data
    python tests/make_old_stores.py 5 7        # only these

For each schema it takes the last commit of main that had it (SCHEMAS; `git log
--first-parent main` and the number of MIGRATIONS at each commit), extracts that commit's
src/ into a temporary directory and drives that code's own daemons and CLI (which kept
the same commands throughout): Alice and Bob pair, Alice makes a circle "family" with
Bob in it, posts a text, then a photo and a file; Bob receives them, comments and reacts;
both stop cleanly (SIGTERM). The same moments as tests/make_old_store.py (schema 3), so
tests/test_store_upgrades.py checks every fixture alike. Needs git and this repository.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

FILE = bytes(range(256)) * 80  # 20,480 bytes: one chunk (as tests/make_old_store.py)
TEXTS = ("the first post", "a photo and a file")
COMMENT, REACTION = "lovely", "🎉"
# Schema version: the last commit of main with it (schema 3 is store-v3.tar.gz, made by
# tests/make_old_store.py from 54f0b04; 8 is the current one, kept so that the next
# schema's migration is tested from it too).
SCHEMAS = {
    1: "41c8828",
    2: "748888f",
    4: "c7613d1",
    5: "a7e3650",
    6: "7591b89",
    7: "7a037f3",
    8: "ebcadf8",
    # 9 to 11 came within one release, as its branches were merged (friend removals,
    # notes, delivered marks); each is the last commit that had it.
    9: "5088856",
    10: "9b92ebc",
    11: "5885bdf",
    12: "81e291c",
}
DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parent.parent


def photo() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(out, format="PNG")
    return out.getvalue()


class OldCode:
    """One commit's src/, run as its own CLI and daemons."""

    def __init__(self, commit: str, where: Path) -> None:
        self.src = where / "src"
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", commit, "src"], capture_output=True, check=True
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(where, filter="data")
        self.env = {**os.environ, "PYTHONPATH": str(self.src), "P2PMOMENTS_HOME": ""}

    def cli(self, home: Path, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "p2pmoments", "--home", str(home), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=90,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{args}: {done.returncode}\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def run(self, home: Path) -> subprocess.Popen[bytes]:
        help_text = self.cli(home, "run", "--help")
        extra = ["--no-tor"] if "--no-tor" in help_text else []
        log = (home.parent / f"{home.name}.log").open("wb")
        daemon = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "p2pmoments",
                "--home",
                str(home),
                "run",
                "--listen",
                "127.0.0.1:0",
                "--api",
                "127.0.0.1:0",
                "--no-mdns",
                *extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        wait(lambda: self._answers(home), f"{home.name}'s daemon to answer")
        return daemon

    def _answers(self, home: Path) -> bool:
        try:
            self.cli(home, "status", "--json")
        except RuntimeError:
            return False
        return True

    def feed(self, home: Path) -> list[dict[str, Any]]:
        return list(json.loads(self.cli(home, "feed", "--json"))["moments"])


def wait(condition: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)  # polling another program's CLI
    raise RuntimeError(f"timed out waiting for {what}")


def make(schema: int, commit: str, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        code = OldCode(commit, root / "code")
        homes = {name: root / "homes" / name for name in ("Alice", "Bob")}
        daemons = []
        try:
            for name, home in homes.items():
                code.cli(home, "init", "--name", name)
                daemons.append(code.run(home))
            alice, bob = homes["Alice"], homes["Bob"]
            link = code.cli(alice, "qr", "--link").strip()
            code.cli(bob, "pair", "--timeout", "30", link)
            code.cli(alice, "circle", "create", "family", "--member", "Bob", "--members-can-post")
            code.cli(alice, "post", "--circle", "family", TEXTS[0])
            (root / "p.png").write_bytes(photo())
            (root / "notes.bin").write_bytes(FILE)
            post = code.cli(
                alice,
                "post",
                "--circle",
                "family",
                "--photo",
                str(root / "p.png"),
                "--file",
                str(root / "notes.bin"),
                TEXTS[1],
            ).strip()

            def bob_holds_all() -> bool:
                moments = {m["id"]: m for m in code.feed(bob)}
                if post not in moments or len(moments) < 2:
                    return False
                blobs = moments[post]["photos"] + moments[post]["files"]
                return all(b["chunks_held"] == b["chunks"] for b in blobs)

            wait(bob_holds_all, "Bob to hold every chunk")
            code.cli(bob, "comment", post, COMMENT)
            code.cli(bob, "react", post, REACTION)

            def alice_has_them() -> bool:
                (moment,) = [m for m in code.feed(alice) if m["id"] == post]
                return bool(moment["comments"]) and bool(moment["reactions"])

            wait(alice_has_them, "Alice to receive the comment and the reaction")
        finally:
            for daemon in daemons:
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(timeout=30)
        with tarfile.open(out, "w:gz") as tar:
            for name, home in homes.items():
                tar.add(home, arcname=name)
    print(f"schema {schema} ({commit}): wrote {out} ({out.stat().st_size} bytes)")


def main() -> None:
    wanted = [int(a) for a in sys.argv[1:]] or [
        s for s in SCHEMAS if not (DATA / f"store-v{s}.tar.gz").exists()
    ]
    for schema in wanted:
        make(schema, SCHEMAS[schema], DATA / f"store-v{schema}.tar.gz")


if __name__ == "__main__":
    main()
