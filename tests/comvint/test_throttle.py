"""The worker's shared throttle: rate budgets at any rate, refusals, headers, AIMD; no test sleeps (the clock is
injected)."""

from __future__ import annotations

import pytest

from comvint.llm.throttle import Throttle, exhausted_for, parse_duration, retry_after, shared_throttle


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def drive(
    throttle: Throttle, clock: Clock, *, until: float = float("inf"), count: int = 10**6, tokens: int = 0
) -> list[float]:
    """Start requests as fast as ``throttle`` lets them (each done at once) on a fake clock; their start times.

    A wait that does not move the clock fails the test instead of spinning forever.
    """
    starts: list[float] = []
    while clock.now < until and len(starts) < count:
        wait = throttle.try_start(tokens=tokens)
        if wait == 0:
            starts.append(clock.now)
            throttle.done()
        else:
            before = clock.now
            clock.now += wait
            assert clock.now > before, f"a wait of {wait!r} s at {before} s never ends"
    return starts


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("0.5", 0.5),
        ("2", 2.0),
        (None, None),
        ("", None),
        ("soon", None),
    ],
)
def test_reset_durations(text, seconds):
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_retry_after_prefers_milliseconds_and_reads_exhausted_budgets():
    assert retry_after({"retry-after-ms": "250", "Retry-After": "3"}) == pytest.approx(0.25)
    assert retry_after({"Retry-After": "3"}) == 3.0 and retry_after({}) is None
    assert exhausted_for(
        {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1.5s"}
    ) == pytest.approx(1.5)
    assert exhausted_for(
        {
            "x-ratelimit-remaining-tokens": "0",
            "x-ratelimit-reset-tokens": "6m0s",
            "x-ratelimit-remaining-requests": "10",
        }
    ) == pytest.approx(360.0)
    assert exhausted_for({"x-ratelimit-remaining-requests": "12"}) is None


def test_thirty_requests_a_minute_flow_one_every_two_seconds():
    clock = Clock()
    throttle = Throttle(start=8, rpm=30, clock=clock)
    assert drive(throttle, clock, count=4) == pytest.approx(
        [0.0, 2.0, 4.0, 6.0]
    )  # a bucket below one request still fills, and never stalls


def test_a_token_budget_below_one_request_still_lets_requests_through():
    clock = Clock()
    throttle = Throttle(start=8, tpm=600, clock=clock)  # 10 tokens a second; each request "costs" 50
    assert drive(throttle, clock, count=3, tokens=50) == pytest.approx(
        [0.0, 5.0, 10.0]
    )  # it goes, and 50-token requests at 600 tokens a minute: one per 5 s


def test_aimd_grows_while_the_endpoint_keeps_up_and_halves_on_a_refusal():
    clock = Clock()
    throttle = Throttle(start=4, ceiling=1000, clock=clock)
    for _ in range(60):
        assert throttle.try_start() == 0
        throttle.done()
    assert throttle.limit == 64  # slow start: one more per success
    throttle.try_start()
    throttle.done(refused=True, headers={"retry-after-ms": "500"})
    assert throttle.limit == 32 and throttle.try_start() == pytest.approx(0.5)  # paused as the endpoint asked
    throttle.done(refused=True)  # a second refusal within a second: no second cut
    assert throttle.limit == 32 and not throttle.slow_start
    clock.now += 1.5
    for _ in range(32):
        assert throttle.try_start() == 0
        throttle.done()
    assert throttle.limit == pytest.approx(33, abs=0.05)  # then one more per round of successes


def test_in_flight_limit_and_exhausted_headers_hold_requests():
    clock = Clock()
    throttle = Throttle(start=2, clock=clock)
    assert throttle.try_start() == 0 and throttle.try_start() == 0 and throttle.try_start() > 0  # two in flight at most
    throttle.done(headers={"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"})
    assert throttle.try_start() == pytest.approx(2.0)  # the endpoint's budget is spent: wait for its reset


def test_every_stage_of_a_worker_shares_one_throttle():
    a = shared_throttle("openai|http://x", 32, 512, 1500.0, 0.0)
    b = shared_throttle("openai|http://x", 32, 512, 1500.0, 0.0)
    assert a is b and shared_throttle("openai|http://y", 32, 512, 1500.0, 0.0) is not a
    a.done(refused=True, headers={"retry-after": "5"})
    assert b.try_start() > 0  # a refusal one stage saw holds the others


def test_a_worker_paces_at_its_share_of_the_limit_the_endpoint_states():
    clock = Clock()
    throttle = Throttle(start=64, clock=clock, workers=2)  # no --llm_rpm: the first reply tells the limit
    assert throttle.try_start() == 0
    throttle.done(headers={"x-ratelimit-limit-requests": "1200", "x-ratelimit-limit-tokens": "600000"})
    assert throttle.rpm == pytest.approx(1200 * 0.95 / 2) and throttle.tpm == pytest.approx(600000 * 0.95 / 2)
    starts = drive(throttle, clock, until=10)
    # one second's worth at once (9 requests), then 9.5 a second: this worker's half of 95% of 20 a second
    assert len(starts) == pytest.approx(9 + 9.5 * 10, abs=1)


def test_a_budget_the_job_was_given_is_kept_and_a_nonsense_limit_is_ignored():
    given = Throttle(rpm=300, workers=2)
    given.done(headers={"x-ratelimit-limit-requests": "10000"})
    assert given.rpm == 300
    learned = Throttle(workers=1)
    for nonsense in ("0", "-5", "nan", "inf", "many"):
        learned.done(headers={"x-ratelimit-limit-requests": nonsense})
    assert learned.rpm == 0
