"""The CLI is a thin client: it starts fast because it imports none of the daemon."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("aiohttp", "zeroconf", "PIL", "sqlite3", "nacl", "cbor2", "segno", "p2pmoments.daemon")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_client_commands_import_none_of_the_daemon() -> None:
    loaded = _modules_after(
        "from p2pmoments.cli import main\n"
        "try:\n"
        "    main(['--home', '/nonexistent-p2pm-home', 'status'])\n"
        "except SystemExit:\n"
        "    pass"
    )
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY or m in HEAVY)
    assert not heavy, f"the CLI imported {heavy}"
