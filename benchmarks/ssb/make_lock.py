"""Write benchmarks/ssb/package-lock.json from ssb-server 16.0.1's own npm-shrinkwrap.json.

    python benchmarks/ssb/make_lock.py

ssb-server 16.0.1 was published with an npm-shrinkwrap.json that pins every package it
was released with, but the registry's metadata does not flag it (no `_hasShrinkwrap`),
so npm 7 and later resolve its `^` ranges afresh, and today's tree does not even start
(ssb-friends 4.4 requires ssb-db2, which ssb-server does not depend on). This script
takes the shrinkwrap from the published tarball, drops ssb-server's dev dependencies,
hoists the rest to the top of a version-1 lock beside ssb-server itself, and lets npm
rewrite that lock in its current format (`--package-lock-only`: nothing is installed).
Run it only to change the pin; `npm ci` installs from the lock it writes.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SERVER = "ssb-server@16.0.1"


def without_dev(entries: dict[str, Any]) -> dict[str, Any]:
    kept = {}
    for name, entry in entries.items():
        if entry.get("dev"):
            continue
        entry = dict(entry)
        if "dependencies" in entry:
            entry["dependencies"] = without_dev(entry["dependencies"])
        kept[name] = entry
    return kept


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (packed,) = json.loads(
            subprocess.run(
                ["npm", "pack", SERVER, "--json", "--pack-destination", tmp],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        with tarfile.open(Path(tmp) / packed["filename"]) as tar:
            shrinkwrap = json.load(tar.extractfile("package/npm-shrinkwrap.json"))  # type: ignore[arg-type]
            manifest = json.load(tar.extractfile("package/package.json"))  # type: ignore[arg-type]
    package = json.loads((HERE / "package.json").read_text())
    dependencies = without_dev(shrinkwrap["dependencies"])
    dependencies["ssb-server"] = {
        "version": packed["version"],
        "integrity": packed["integrity"],
        "requires": manifest["dependencies"],
    }
    lock = {
        "name": package["name"],
        "version": package["version"],
        "lockfileVersion": 1,
        "requires": True,
        "dependencies": dict(sorted(dependencies.items())),
    }
    (HERE / "package-lock.json").write_text(json.dumps(lock, indent=2) + "\n")
    subprocess.run(
        ["npm", "install", "--package-lock-only", "--no-audit", "--no-fund"], cwd=HERE, check=True
    )


if __name__ == "__main__":
    main()
