"""Posting benchmarks for issue 5, each beside the raw crypto cost measured in the same run.

    .venv/bin/python benchmarks/moments.py [--json FILE]

Moments posted per second through the API of a real daemon process (text only,
and with a 3 MB photo), beside what PyNaCl alone takes for the same
cryptographic work (sign, encrypt, hash), so the ratio shows what the daemon adds;
and text moments posted by several clients at once, beside one client alone, with
how many of them were stored (issue 10: all of them, and faster than one client).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import daemon_info, p2pm, report, start, stop, wait

from p2pmoments.core.blobs import BlobKind, encrypt_blob
from p2pmoments.core.crypto import SigningKey, random_bytes, xaead_encrypt

TEXT_POSTS = 300
PHOTO_POSTS = 15
CONCURRENT_POSTS = 2000
POSTERS = 4


def photo_of_about(size: int) -> bytes:
    side = 1000
    while True:
        out = io.BytesIO()
        Image.effect_noise((side, side * 3 // 4), 40).convert("RGB").save(out, "JPEG", quality=95)
        if out.tell() >= size:
            return out.getvalue()
        side = int(side * 1.05)


async def post_many(api: str, token: str, n: int, photo: bytes | None) -> float:
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        start = time.perf_counter()
        for i in range(n):
            if photo is None:
                async with session.post(
                    f"{api}/moments", json={"circle": "bench", "text": f"moment {i}"}
                ) as r:
                    assert r.status == 201, await r.text()
            else:
                form = aiohttp.FormData()
                form.add_field("circle", "bench")
                form.add_field("text", f"photo {i}")
                form.add_field("photo", photo, filename="p.jpg", content_type="image/jpeg")
                async with session.post(f"{api}/moments", data=form) as r:
                    assert r.status == 201, await r.text()
        return n / (time.perf_counter() - start)


async def post_concurrently(api: str, token: str, n: int, posters: int) -> tuple[float, int]:
    """`posters` clients posting `n` text moments between them at once: the rate, and how
    many more moments the daemon holds afterwards."""
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.get(f"{api}/status") as r:
            before = (await r.json())["moments"]

        async def poster(first: int) -> None:
            for i in range(first, n, posters):
                async with session.post(
                    f"{api}/moments", json={"circle": "bench", "text": f"together {i}"}
                ) as r:
                    await r.read()  # an error is counted below: fewer moments stored

        start = time.perf_counter()
        await asyncio.gather(*(poster(k) for k in range(posters)))
        rate = n / (time.perf_counter() - start)
        async with session.get(f"{api}/status") as r:
            after = (await r.json())["moments"]
    return rate, after - before


def raw_text_rate(n: int = 3000) -> float:
    key, signer = random_bytes(32), SigningKey.generate()
    start = time.perf_counter()
    for i in range(n):
        ct = xaead_encrypt(key, random_bytes(24), b"h" * 120, f"moment {i}".encode() + b"x" * 40)
        signer.sign(b"b" * 200 + ct)
    return n / (time.perf_counter() - start)


def raw_photo_rate(photo: bytes, n: int = 20) -> float:
    signer = SigningKey.generate()
    start = time.perf_counter()
    for _ in range(n):
        encrypt_blob(photo, kind=BlobKind.PHOTO, media_type="image/jpeg")
        encrypt_blob(photo[:20_000], kind=BlobKind.PHOTO, media_type="image/jpeg")
        signer.sign(b"b" * 600)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    photo = photo_of_about(3_000_000)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "bench"
        p2pm(home, "init", "--name", "Bench")
        proc = start(home)
        try:
            wait(lambda: daemon_info(home, proc.pid))
            api = json.loads((home / "data" / "daemon.json").read_text())["api_url"]
            token = (home / "data" / "api.token").read_text().strip()
            p2pm(home, "circle", "create", "bench")
            text = asyncio.run(post_many(api, token, TEXT_POSTS, None))
            photos = asyncio.run(post_many(api, token, PHOTO_POSTS, photo))
            alone, _ = asyncio.run(post_concurrently(api, token, CONCURRENT_POSTS, 1))
            together, stored = asyncio.run(post_concurrently(api, token, CONCURRENT_POSTS, POSTERS))
        finally:
            stop(proc)
    rows = [
        (
            "text moments posted/s through the API",
            text,
            "raw crypto (encrypt+sign)/s",
            raw_text_rate(),
        ),
        (
            f"{len(photo) / 1e6:.1f} MB photo moments posted/s",
            photos,
            "raw crypto (blob+thumb+sign)/s",
            raw_photo_rate(photo),
        ),
        (
            f"text moments posted/s by {POSTERS} clients at once",
            together,
            "by one client alone",
            alone,
        ),
        (
            f"of {CONCURRENT_POSTS} moments posted by {POSTERS} clients at once, stored",
            stored,
            "posted",
            CONCURRENT_POSTS,
        ),
    ]
    report(rows, args.json)
    for name, value, _, base in rows[:2]:
        print(f"  {name}: the raw crypto is {base / value:.1f}x faster than the whole post")


if __name__ == "__main__":
    main()
