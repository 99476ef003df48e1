"""Shared fixtures: initialised homes, nodes on loopback, an API client checked
against spec/openapi.yaml, and guards against blocking calls and leaked threads."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from blockbuster import BlockBuster, blockbuster_ctx
from hypothesis import HealthCheck, settings

from p2pmoments.config import Address, Config
from p2pmoments.core.identity import Identity
from p2pmoments.home import init_home, load_identity
from p2pmoments.node import Node
from p2pmoments.paths import Paths, resolve_paths
from tests.daemons import Daemon
from tests.tornet import TorNetwork, tor_binaries

# Hypothesis must not flake on a slow or busy machine (a cold CI run failed the too_slow
# health check once): no per-example deadline, no health check on generation speed. Each
# test still sets its own number of examples, so a run stays bounded.
settings.register_profile(
    "p2pmoments",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.load_profile("p2pmoments")

LOG_TAIL = 60  # lines of each daemon's log printed when a test fails

LOOPBACK = Config(
    listen=Address(host="127.0.0.1", port=0),
    api_listen=Address(host="127.0.0.1", port=0),
    mdns=False,
    tor="off",  # never the public Tor network; tests/test_tor_daemons.py turns it on
)


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster | None]:
    """Fail any blocking call made on the event loop (style.md, rule 10)."""
    with blockbuster_ctx("p2pmoments") as bb:
        yield bb


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Every store thread a test starts must be gone when it ends."""
    yield
    leaked = [t.name for t in threading.enumerate() if t.name.startswith("p2pm-")]
    assert not leaked, f"threads left running: {leaked}"


@pytest.fixture
def home(tmp_path: Path) -> Paths:
    """An initialised home in a temporary directory."""
    paths = resolve_paths(tmp_path / "home")
    init_home(paths, "Alice")
    return paths


@pytest.fixture
def identity(home: Paths) -> Identity:
    """The identity of `home`."""
    return load_identity(home)


@pytest.fixture
async def node(home: Paths, identity: Identity) -> AsyncIterator[Node]:
    """A running node on loopback."""
    async with Node(paths=home, config=LOOPBACK, identity=identity) as n:
        yield n


@pytest.fixture
async def pair_of_nodes(tmp_path: Path) -> AsyncIterator[tuple[Node, Node]]:
    """Alice's and Bob's nodes on loopback, not yet friends."""
    from tests.multinode import make_home, running

    alice_home, bob_home = await make_home(tmp_path, "Alice"), await make_home(tmp_path, "Bob")
    async with running(alice_home) as alice, running(bob_home) as bob:
        yield alice, bob


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """Keep each phase's report on the test, so fixtures can tell a failed test."""
    report = yield
    setattr(item, f"report_{call.when}", report)
    return report


@pytest.fixture
def daemons(request: pytest.FixtureRequest) -> Iterator[list[Daemon]]:
    """Daemon processes a test starts; each is stopped by its pid at the end, whatever
    happens. If the test failed, the end of each daemon's log is printed (CI shows a
    failed test's output, and the logs themselves are gone with the machine)."""
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.close()
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        for daemon in started:
            print(f"--- the last lines of {daemon.log.name} ---")
            print("\n".join(daemon.output.splitlines()[-LOG_TAIL:]))


@pytest.fixture(scope="session")
def tor_network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TorNetwork]:
    """A private Tor network on loopback for the whole session (tests/tornet.py);
    skipped with the reason where tor or tor-gencert is missing."""
    found = tor_binaries()
    if found is None:
        pytest.skip("tor and tor-gencert are not installed (apt install tor)")
    network = TorNetwork(tmp_path_factory.mktemp("tornet"), tor=found[0], gencert=found[1])
    network.start()
    try:
        yield network
    finally:
        network.stop()
