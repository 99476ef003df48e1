"""Per-peer budgets: a busy peer is slowed, a junk-flooding peer is dropped."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pmoments.core.budget import JunkScore, TokenBucket


def test_within_the_burst_there_is_no_wait_and_beyond_it_the_wait_is_what_the_rate_needs() -> None:
    bucket = TokenBucket(rate=1000, burst=500)
    assert bucket.take(500, now=0.0) == 0.0
    assert bucket.take(250, now=0.0) == pytest.approx(0.25)  # 250 over, at 1000 a second
    # After the wait, the budget is back to zero; a second later it has refilled 1000
    # (capped at the burst).
    assert bucket.take(0, now=0.25) == 0.0
    assert bucket.take(500, now=1.25) == 0.0
    assert bucket.take(1, now=1.25) > 0


@given(st.lists(st.tuples(st.integers(0, 5000), st.floats(0, 2)), max_size=50))
def test_waiting_as_told_keeps_any_peer_to_the_rate(steps: list[tuple[int, float]]) -> None:
    rate, burst = 1000.0, 500.0
    bucket = TokenBucket(rate=rate, burst=burst)
    now = 0.0
    done = 0
    for units, pause in steps:
        now += pause
        now += bucket.take(units, now)  # the caller waits as told, then does the work
        done += units
        assert done <= burst + rate * now + 1e-6


def test_junk_past_the_limit_drops_the_peer_and_is_forgiven_with_time() -> None:
    score = JunkScore(limit=10, decay=1)
    assert not score.add(10, now=0)
    assert score.add(1, now=0)  # 11 > 10
    fresh = JunkScore(limit=10, decay=1)
    assert not fresh.add(10, now=0)
    assert not fresh.add(5, now=5)  # 5 forgiven meanwhile: 10 again
    assert fresh.add(1, now=5)


def test_a_budget_needs_a_positive_rate() -> None:
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(rate=0, burst=1)
