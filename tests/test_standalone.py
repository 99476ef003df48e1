"""The project stands alone: a clone with nothing beside it passes its own tests."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
CHECKED = ("src", "tests", "benchmarks", "spec", ".ci")
TOP_FILES = ("Makefile", "pyproject.toml", "README.md", "config.example.toml")
# A path that leaves the project for a sibling folder (the team's notes beside a clone).
OUTSIDE = re.compile(r"\.\./shared|parent\.parent\.parent|\"shared\"\s*/")


def _files() -> list[Path]:
    files = [ROOT / name for name in TOP_FILES]
    for folder in CHECKED:
        files += [
            p
            for p in (ROOT / folder).rglob("*")
            if p.is_file()
            and not any(part == "__pycache__" or part.endswith(".egg-info") for part in p.parts)
        ]
    return [p for p in files if p.exists() and p.suffix not in (".png", ".jpg", ".pyc")]


def test_nothing_reads_a_folder_beside_the_project() -> None:
    offenders = []
    for path in _files():
        if path == Path(__file__):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        offenders += [f"{path.relative_to(ROOT)}: {m.group()}" for m in OUTSIDE.finditer(text)]
    assert not offenders, offenders


def test_the_noise_vectors_ship_with_the_tests() -> None:
    vectors = ROOT / "tests" / "vectors"
    assert (vectors / "cacophony.txt").stat().st_size > 1000
    assert (vectors / "snow.txt").stat().st_size > 1000
    assert "licence" in (vectors / "README.md").read_text()
