"""The signature checker's worker processes (verifying.py): started ahead of a catch-up."""

from __future__ import annotations

import multiprocessing

from p2pmoments.core.crypto import SigningKey
from p2pmoments.verifying import PROCESS_MIN, WORKERS, Verifier
from tests.multinode import eventually


async def test_a_warmed_checker_starts_its_processes_first_and_refuses_a_forgery() -> None:
    assert multiprocessing.active_children() == []
    verifier = Verifier()
    try:
        await verifier.warm()  # a peer's have says a catch-up is coming
        await eventually(lambda: len(multiprocessing.active_children()) == WORKERS, timeout=30)
        await verifier.warm()  # told again: nothing more started
        key = SigningKey.generate()
        public = bytes(key.verify_key)
        checks = [(public, key.sign(b"m%d" % i), b"m%d" % i) for i in range(PROCESS_MIN * 2)]
        checks[7] = (public, checks[7][1], b"not what was signed")
        verdicts = await verifier.verify(checks)
        assert [i for i, ok in enumerate(verdicts) if not ok] == [7]
        assert len(multiprocessing.active_children()) == WORKERS
    finally:
        await verifier.close()
        await verifier.close()
    await eventually(lambda: not multiprocessing.active_children(), timeout=30)
