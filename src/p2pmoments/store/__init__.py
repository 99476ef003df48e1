"""The SQLite store (spec/store.md): WAL, a schema version, forward migrations.

`Store` is synchronous and must be used from one thread; its methods come from one
module per set of tables (people, circles, moments, read marks) over one connection
(database). `AsyncStore` runs it on one dedicated thread, so no database call ever
runs on the event loop. Every write commits with synchronous=FULL before the call
returns: what the daemon acknowledged survives a crash or a power cut.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from p2pmoments.disk import reporting
from p2pmoments.store.circles import CircleTables
from p2pmoments.store.database import StoreError
from p2pmoments.store.moments import MomentTables
from p2pmoments.store.notes import NoteTables
from p2pmoments.store.people import PeopleTables
from p2pmoments.store.pictures import PictureTables
from p2pmoments.store.reading import Place, ReadTables
from p2pmoments.store.receipts import ReceiptTables
from p2pmoments.store.records import (
    Counts,
    Freed,
    FriendRecord,
    FriendState,
    NewMoment,
    PairingRecord,
    StoredMoment,
    TokenRecord,
)
from p2pmoments.store.schema import SCHEMA_VERSION
from p2pmoments.store.versions import VersionTables

__all__ = [
    "SCHEMA_VERSION",
    "AsyncStore",
    "Counts",
    "Freed",
    "FriendRecord",
    "FriendState",
    "NewMoment",
    "PairingRecord",
    "Place",
    "Store",
    "StoreError",
    "StoredMoment",
    "TokenRecord",
    "initialise",
]

P = ParamSpec("P")
T = TypeVar("T")


class Store(
    PeopleTables,
    CircleTables,
    MomentTables,
    ReadTables,
    VersionTables,
    NoteTables,
    ReceiptTables,
    PictureTables,
):
    """Synchronous access to the database; one thread only."""


def initialise(path: Path, name: str) -> None:
    """Create the database with our name, unless it already has one."""
    store = Store.open(path)
    try:
        store.initialise(name)
    finally:
        store.close()


class AsyncStore:
    """The store on its own thread; every method is awaited from the event loop."""

    def __init__(self, path: Path, on_full: Callable[[], None] | None = None) -> None:
        self._path = path
        self.on_full = on_full  # told when a write finds the disk full
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="p2pm-store")
        self._store: Store | None = None

    async def open(self) -> None:
        """Open and migrate the database on the store thread."""
        loop = asyncio.get_running_loop()
        self._store = await loop.run_in_executor(self._executor, Store.open, self._path)

    async def run(
        self, fn: Callable[Concatenate[Store, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Call `fn(store, *args)` on the store thread and return its result;
        DiskFullError if the disk had no room for it (the transaction rolled back)."""
        store = self._store
        if store is None:
            raise StoreError("the store is not open")
        loop = asyncio.get_running_loop()

        def call() -> T:
            with reporting(self._path.parent, on_full=self.on_full):
                return fn(store, *args, **kwargs)

        return await loop.run_in_executor(self._executor, call)

    async def close(self) -> None:
        """Close the database and stop the thread; safe to call twice."""
        store, self._store = self._store, None
        if store is not None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, store.close)
        await asyncio.to_thread(self._executor.shutdown, wait=True)
