"""The daemon's Tor (spec/tor.md): our own tor or a running system tor, our onion
service with client authorisation, its client list kept in step, and streams to the
onion services of friends and co-members.

It never holds up start-up: `run()` lives in the node's TaskGroup, and whatever tor
does (missing, slow to bootstrap, killed) the daemon goes on on the LAN. A tor that
stops is started again, with backoff. Secrets (our onion key, client-auth keys) go to
tor only; the onion address never reaches a log (OnionAddress's repr shows six
characters).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from p2pmoments.config import Config
from p2pmoments.core.onion import ClientAuthKey, ClientAuthPublicKey, OnionAddress, TorKeys
from p2pmoments.events import EventBus
from p2pmoments.net.tor import (
    Tor,
    TorError,
    TorNotFoundError,
    TorStatus,
    find_tor,
    load_or_create_tor_keys,
)
from p2pmoments.paths import Paths

__all__ = ["Onions", "TorState"]

log = logging.getLogger(__name__)

T = TypeVar("T")

BOOTSTRAP_WAIT = 24 * 3600.0  # a tor that cannot bootstrap is left trying; status says so
ONION_DIAL_TIMEOUT = 90.0  # one dial(), its retries (0xF0 while a service publishes) included
REPUBLISH_DELAY = 0.5  # changes to the client list within this are published together
RESTART_FIRST = 5.0
RESTART_MAX = 300.0


class TorState(enum.StrEnum):
    """Where our tor is, as `status` shows it."""

    OFF = "off"  # network.tor is off
    MISSING = "missing"  # no tor program (error says how to install one)
    STARTING = "starting"  # launching or attaching, then bootstrapping
    RUNNING = "running"  # bootstrapped; our onion service is published or on its way
    FAILED = "failed"  # it stopped or could not start; tried again later (error says why)


class TorGone(TorError):
    """Our tor stopped while we waited for it."""


class Onions:
    """Our tor and our onion service."""

    def __init__(
        self,
        *,
        paths: Paths,
        config: Config,
        events: EventBus,
        on_ready_change: Callable[[], None] = lambda: None,
    ) -> None:
        self._paths = paths
        self._config = config
        self._events = events
        self._on_ready_change = on_ready_change
        self.keys: TorKeys | None = None
        self._tor: Tor | None = None
        self._state = TorState.STARTING if config.tor_wanted else TorState.OFF
        self._error: str | None = None
        self._clients: frozenset[ClientAuthPublicKey] = frozenset()
        self._clients_changed = asyncio.Event()
        self._visits: dict[OnionAddress, ClientAuthKey] = {}  # keys other than ours
        self._added: dict[OnionAddress, ClientAuthPublicKey] = {}  # what this tor holds
        self._last_event: dict[str, Any] | None = None
        self._ready = False
        # When things happened (monotonic), for `status` and the figures in spec/tor.md.
        self.started_at = time.monotonic()
        self.bootstrapped_at: float | None = None
        self.published_at: float | None = None

    async def load(self) -> None:
        """If Tor is on and a tor program is there (or a running tor is named), read (or
        make, mode 0600) the home's onion and client-auth keys. Without tor, Tor stays
        off, and `status` says how to install it."""
        if not self._config.tor_wanted:
            return
        if self._config.tor_control is None:
            try:
                await asyncio.to_thread(find_tor, self._config.tor_path)
            except TorNotFoundError as exc:
                self._set_state(TorState.MISSING, str(exc))
                level = logging.WARNING if self._config.tor == "on" else logging.INFO
                log.log(level, "Tor is off: %s. Friends are reached on the LAN only.", exc)
                return
        self.keys = await asyncio.to_thread(load_or_create_tor_keys, self._paths.tor_key_file)

    # --- what others ask ----------------------------------------------------------------

    @property
    def address(self) -> OnionAddress | None:
        """Our onion address, known from our key before tor even starts (None: Tor off or
        missing)."""
        return None if self.keys is None else self.keys.onion.address

    def ready(self) -> bool:
        """True while tor is bootstrapped and can reach onion services."""
        return self._ready

    def set_clients(self, clients: Iterable[ClientAuthPublicKey]) -> None:
        """Who may reach our onion service from now on; published shortly after."""
        wanted = frozenset(clients)
        if wanted != self._clients:
            self._clients = wanted
            self._clients_changed.set()

    def visit(self, onion: OnionAddress, key: ClientAuthKey | None) -> None:
        """Reach `onion` with `key` (a pairing code's), or with our own key (None)."""
        if key is None:
            self._visits.pop(onion, None)
        else:
            self._visits[onion] = key

    async def dial(self, onion: OnionAddress) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A stream to `onion`'s peer port through our tor (its retries included); TorError
        or SocksError if there is none."""
        tor = self._tor
        if tor is None or not self._ready or self.keys is None:
            raise TorError("tor is not running")
        key = self._visits.get(onion, self.keys.client_auth)
        if self._added.get(onion) != key.public_key:
            await tor.add_client_auth(onion, key)
            self._added[onion] = key.public_key
        return await tor.dial(onion, timeout=ONION_DIAL_TIMEOUT)

    @property
    def pid(self) -> int | None:
        """Our own tor's process id, if we run one now."""
        return None if self._tor is None else self._tor.pid

    def status(self) -> dict[str, Any]:
        """Our tor as `status` shows it (spec/openapi.yaml, TorStatus)."""
        tor = None if self._tor is None else self._tor.status()
        return {
            "mode": self._config.tor,
            "state": self._state.value,
            "own": self._config.tor_control is None,
            "bootstrapped": self._ready,
            "bootstrap": 0 if tor is None else tor.bootstrap,
            # Ours: the local user may see it (spec/tor.md section 6).
            "onion": None if self.address is None else str(self.address),
            "published": tor is not None and tor.published,
            "authorized_clients": len(self._clients),
            "error": self._error,
        }

    # --- running ------------------------------------------------------------------------

    async def run(self, target_port: int) -> None:
        """Run tor and our onion service for the peers' port `target_port` (on loopback),
        until cancelled; start it again if it stops."""
        if self.keys is None:
            return
        failures = 0
        while True:
            self._set_state(TorState.STARTING)
            try:
                tor = await self._start()
            except TorNotFoundError as exc:
                self._set_state(TorState.MISSING, str(exc))
                level = logging.WARNING if self._config.tor == "on" else logging.INFO
                log.log(level, "Tor is off: %s. Friends are reached on the LAN only.", exc)
                return
            except (TorError, OSError, ValueError) as exc:
                self._set_state(TorState.FAILED, f"tor did not start: {exc}")
                log.warning("tor did not start: %s", exc)
            else:
                self._tor = tor
                try:
                    await self._serve(tor, target_port)
                except (TorError, OSError) as exc:
                    if self._ready:
                        failures = 0  # it worked until now: start again soon
                    self._set_state(TorState.FAILED, str(exc))
                    log.warning("tor: %s; the daemon goes on on the LAN", exc)
                finally:
                    self._tor = None
                    self._added.clear()
                    self._set_ready(False)
                    await tor.close()
            failures += 1
            await asyncio.sleep(min(RESTART_MAX, RESTART_FIRST * 2 ** min(failures - 1, 8)))

    async def _start(self) -> Tor:
        if self._config.tor_control is not None:
            return await Tor.attach(self._config.tor_control, on_change=self._tor_changed)
        return await Tor.launch(
            self._paths.tor_dir,
            tor_path=self._config.tor_path,
            extra_lines=self._config.tor_torrc,
            on_change=self._tor_changed,
        )

    async def _serve(self, tor: Tor, target_port: int) -> None:
        """Bootstrap, publish, keep the client list in step; returns never, raises TorGone
        when tor stops."""
        assert self.keys is not None
        await self._while_up(tor, tor.wait_bootstrapped(timeout=BOOTSTRAP_WAIT))
        self.bootstrapped_at = self.bootstrapped_at or time.monotonic()
        self._set_ready(True)  # friends' services can be reached while ours is published
        self._clients_changed.clear()
        await self._while_up(
            tor, tor.publish(self.keys.onion, target_port, authorized=self._clients)
        )
        self._set_state(TorState.RUNNING)
        log.info("Tor is up; our onion service admits %d clients", len(self._clients))
        while True:
            await self._while_up(tor, self._clients_changed.wait())
            await asyncio.sleep(REPUBLISH_DELAY)  # a burst of changes: one publication
            self._clients_changed.clear()
            await self._while_up(tor, tor.set_authorized_clients(self._clients))
            self._publish_status()

    async def _while_up(self, tor: Tor, work: Awaitable[T]) -> T:
        """`work`'s result, or TorGone if tor stops first."""
        doing = asyncio.ensure_future(work)
        gone = asyncio.ensure_future(tor.wait_gone())
        try:
            await asyncio.wait({doing, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not doing.done():
                doing.cancel()
        if not doing.done() or doing.cancelled():
            raise TorGone("tor stopped")
        return doing.result()

    # --- status ---------------------------------------------------------------------

    def _tor_changed(self, status: TorStatus) -> None:
        if status.published and self.published_at is None:
            self.published_at = time.monotonic()
        self._publish_status()

    def _set_state(self, state: TorState, error: str | None = None) -> None:
        self._state, self._error = state, error
        self._publish_status()

    def _set_ready(self, ready: bool) -> None:
        if ready != self._ready:
            self._ready = ready
            self._publish_status()
            self._on_ready_change()

    def _publish_status(self) -> None:
        status = self.status()
        if status != self._last_event:
            self._last_event = status
            self._events.publish("tor.status", **status)
