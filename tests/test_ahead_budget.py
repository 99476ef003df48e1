"""Chunks sent ahead that no moment uses cost disk byte for byte (spec/sync.md 5.1):
what one peer can make us keep is its budget, which a new link does not renew."""

from __future__ import annotations

import asyncio
from pathlib import Path

from p2pmoments.core.ahead import T_AHEAD, encode_ahead
from p2pmoments.core.blobs import chunk_address
from tests.multinode import eventually
from tests.test_replication import family_of_two


async def test_a_peers_budget_for_chunks_ahead_outlives_its_link(tmp_path: Path) -> None:
    async with family_of_two(tmp_path) as (alice, bob):
        (circle,) = [c.circle_id for c in bob.circles.all()]
        seen: list[int] = []
        bob.on_message = lambda key, body: seen.append(body[0])
        bob.ahead.budget = 1500

        def chunk(n: int) -> tuple[bytes, bytes]:
            data = bytes([n]) * 1000
            return chunk_address(data, 2), data

        first, second = chunk(1), chunk(2)
        assert alice.links.send(bob.me, encode_ahead(circle, *first))
        await eventually(lambda: bob.ahead.kept >= 1, what="the first chunk kept")
        bob.ahead.link_down(alice.me)  # her link ends; she links again
        bob.ahead.link_up(alice.me)
        assert alice.links.send(bob.me, encode_ahead(circle, *second))
        await eventually(lambda: seen.count(T_AHEAD) >= 2, what="the second chunk at Bob")
        await bob.ahead.written(alice.me)
        held = await asyncio.to_thread(lambda: [bob.blobs.has(c[0]) for c in (first, second)])
        assert held == [True, False]  # over her budget: relinking does not renew it
