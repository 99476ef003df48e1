"""The core stays pure (design.md): no I/O, no event loop, no clock.

Each core module is imported alone in a fresh interpreter, and its source is
read for imports: neither may reach asyncio, sockets, sqlite3, zeroconf,
aiohttp, platformdirs, the clock, or the shell half of the package.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).parent.parent / "src" / "p2pmoments" / "core"
MODULES = sorted(f"p2pmoments.core.{p.stem}" for p in CORE.glob("*.py") if p.stem != "__init__")
FORBIDDEN_LOADED = {
    "asyncio",
    "socket",
    "sqlite3",
    "_sqlite3",
    "zeroconf",
    "aiohttp",
    "platformdirs",
    "selectors",
    "ssl",
    "threading",
}
FORBIDDEN_IMPORTS = FORBIDDEN_LOADED | {
    "time",
    "datetime",
    "os",
    "subprocess",
    "random",
    "secrets",
    "pathlib",
    "shutil",
    "tempfile",
    "io",
}
PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(sys.modules)))
"""


def test_there_are_core_modules() -> None:
    assert {"p2pmoments.core.ids", "p2pmoments.core.crypto", "p2pmoments.core.wire"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_importing_a_core_module_loads_no_io(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, module],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    loaded = set(json.loads(result.stdout))
    assert not loaded & FORBIDDEN_LOADED, sorted(loaded & FORBIDDEN_LOADED)
    shell = {
        m for m in loaded if m.startswith("p2pmoments.") and not m.startswith("p2pmoments.core")
    }
    assert not shell, f"{module} pulls in the shell: {sorted(shell)}"


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_core_source_imports_nothing_impure(path: Path) -> None:
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN_IMPORTS, sorted(imported & FORBIDDEN_IMPORTS)


def test_only_crypto_imports_nacl_and_only_wire_imports_cbor2() -> None:
    src = CORE.parent
    for path in src.rglob("*.py"):
        text = path.read_text()
        if path.name != "crypto.py":
            assert "import nacl" not in text, path
            assert "from nacl" not in text, path
        if path.name != "wire.py":
            assert "import cbor2" not in text, path
            assert "from cbor2" not in text, path
        if path.name != "paths.py":
            assert "import platformdirs" not in text, path
