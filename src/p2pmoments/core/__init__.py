"""The pure core: bytes and `now` in, events and bytes out.

Nothing in this package imports asyncio, socket, sqlite3, zeroconf, aiohttp,
platformdirs or a clock (design.md); tests/test_purity.py keeps it that way.
"""
