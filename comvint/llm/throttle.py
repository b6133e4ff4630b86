"""One adaptive throttle per worker process, shared by every stage: the job adapts to the endpoint as a whole.

Every stage's runner asks the same :class:`Throttle` before a request and tells it how the request
ended. It keeps the number of requests in flight under an AIMD limit (additive increase while the
endpoint keeps up: one more per success until the first refusal, then one more per round of
successes; halved at most once per second on a refusal), honours ``Retry-After`` /
``retry-after-ms`` and the ``x-ratelimit-remaining-*`` / ``x-ratelimit-reset-*`` headers (a worker
that sees the endpoint's budget exhausted waits for its reset), and applies this worker's share of
the job's ``--llm_rpm`` / ``--llm_tpm`` budget. Without such a budget, a reply's ``x-ratelimit-limit-requests``
/ ``-tokens`` set one: :data:`PACE_SHARE` of the endpoint's limit, split among the job's workers, paced by the
same one-second buckets (an endpoint may enforce a per-minute limit per second): probing by refusals
alone used the quota but had two workers refused on 38% of their requests. Its state is plain numbers under a threading
lock,
so runners on different event loops (one per stage DoFn) share it.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Mapping

POLL_S = 0.005
PACE_SHARE = 0.95  # of an endpoint's stated limit a job paces itself at (headroom for timing jitter)
DEFAULT_PAUSE_S = 1.0  # a refusal that says nothing of when to come back
_SLACK = 1e-9  # a bucket this close to full enough counts as enough: float rounding must not ask for a 1e-17 s wait
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+(?:\.\d+)?)ms)?$")


def parse_duration(text: str | None) -> float | None:
    """OpenAI's reset durations ("1s", "6m0s", "20ms", "1h2m3.5s") or plain seconds, in seconds."""
    if not text:
        return None
    text = text.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    match = _DURATION.match(text)
    if not match or not any(match.groups()):
        return None
    h, m, s, ms = (float(g) if g else 0.0 for g in match.groups())
    return h * 3600 + m * 60 + s + ms / 1000


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds a refusal asks us to wait: ``retry-after-ms`` first (finer), else ``retry-after``."""
    lowered = {k.lower(): v for k, v in headers.items()}
    if lowered.get("retry-after-ms"):
        try:
            return max(0.0, float(lowered["retry-after-ms"]) / 1000)
        except ValueError:
            pass
    return parse_duration(lowered.get("retry-after"))


def exhausted_for(headers: Mapping[str, str]) -> float | None:
    """Seconds until the endpoint's budget resets when a reply says none is left (requests or tokens)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    waits = []
    for kind in ("requests", "tokens"):
        remaining = lowered.get(f"x-ratelimit-remaining-{kind}")
        try:
            if remaining is not None and float(remaining) <= 0:
                waits.append(parse_duration(lowered.get(f"x-ratelimit-reset-{kind}")) or 1.0)
        except ValueError:
            continue
    return max(waits) if waits else None


def stated_limits(headers: Mapping[str, str]) -> dict[str, float]:
    """The endpoint's per-minute limits a reply states (``x-ratelimit-limit-requests`` / ``-tokens``)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    limits = {}
    for kind in ("requests", "tokens"):
        try:
            value = float(lowered.get(f"x-ratelimit-limit-{kind}", ""))
        except ValueError:
            continue
        if value > 0 and value == value and value != float("inf"):
            limits[kind] = value
    return limits


class Throttle:
    """The worker's gate for requests: AIMD in-flight limit, refusal pauses, and a rate budget."""

    def __init__(
        self,
        start: int = 64,
        ceiling: int = 1024,
        rpm: float = 0.0,
        tpm: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        workers: int = 1,
    ) -> None:
        self.limit, self.ceiling, self.rpm, self.tpm, self._clock = float(start), ceiling, rpm, tpm, clock
        # A budget the job was given is kept; one it was not given is learned from the endpoint's headers.
        self.workers, self._learn_rpm, self._learn_tpm = max(1, workers), not rpm, not tpm
        self.in_flight, self.paused_until, self._last_cut, self.slow_start = 0, 0.0, -1e9, True
        now = clock()
        # Buckets start full: one second's worth, and never less than one request (a rate below 60/min still flows).
        self._requests, self._tokens, self._filled = max(1.0, rpm / 60), max(1.0, tpm / 60), now
        self._lock = threading.Lock()
        self.refusals = 0

    def _refill(self, now: float) -> None:
        elapsed, self._filled = now - self._filled, now
        if self.rpm:
            self._requests = min(max(1.0, self.rpm / 60), self._requests + elapsed * self.rpm / 60)
        if self.tpm:
            self._tokens = min(max(1.0, self.tpm / 60), self._tokens + elapsed * self.tpm / 60)

    def _wait(self, tokens: int, now: float) -> float:
        """Seconds before a request of ``tokens`` may start (0: now). Caller holds the lock."""
        self._refill(now)
        waits = [self.paused_until - now]
        if self.in_flight >= int(self.limit):
            waits.append(POLL_S)
        if self.rpm and self._requests < 1 - _SLACK:
            waits.append((1 - self._requests) * 60 / self.rpm)
        if self.tpm:  # a request larger than the bucket waits for a full bucket, then goes (it cannot be split)
            need = min(tokens, max(1.0, self.tpm / 60))
            if self._tokens < need - _SLACK:
                waits.append((need - self._tokens) * 60 / self.tpm)
        return max(waits)

    def try_start(self, tokens: int = 0) -> float:
        """Start a request now (returns 0) or say how long to wait before asking again."""
        with self._lock:
            wait = self._wait(tokens, self._clock())
            if wait > 0:
                return wait
            self.in_flight += 1
            if self.rpm:
                self._requests -= 1
            if self.tpm:
                self._tokens -= tokens
            return 0.0

    async def acquire(self, tokens: int = 0) -> float:
        """Wait (in real time: the limits are the endpoint's) for a slot; return the seconds waited."""
        waited = 0.0
        while (wait := self.try_start(tokens)) > 0:
            wait = min(wait, 1.0)
            await asyncio.sleep(wait)
            waited += wait
        return waited

    def done(self, refused: bool = False, headers: Mapping[str, str] | None = None) -> None:
        """A request ended: grow the limit on success; on a refusal halve it (once a second) and pause."""
        headers = headers or {}
        with self._lock:
            now = self._clock()
            self.in_flight = max(0, self.in_flight - 1)
            if refused:
                self.refusals, self.slow_start = self.refusals + 1, False
                if now - self._last_cut >= 1.0:
                    self.limit, self._last_cut = max(1.0, self.limit / 2), now
                asked = retry_after(headers)
                self.paused_until = max(self.paused_until, now + (asked if asked is not None else DEFAULT_PAUSE_S))
            else:
                step = 1.0 if self.slow_start else 1.0 / max(1.0, self.limit)
                self.limit = min(float(self.ceiling), self.limit + step)
            pause = exhausted_for(headers)
            if pause is not None:
                self.paused_until = max(self.paused_until, now + pause)
            self._learn(headers, now)

    def _learn(self, headers: Mapping[str, str], now: float) -> None:
        """Pace at this worker's share of the limits the endpoint states (caller holds the lock)."""
        limits = stated_limits(headers)
        for kind, learn in (("requests", self._learn_rpm), ("tokens", self._learn_tpm)):
            if not learn or kind not in limits:
                continue
            rate = limits[kind] * PACE_SHARE / self.workers
            self._refill(now)
            if kind == "requests" and rate != self.rpm:
                self.rpm, self._requests = rate, max(1.0, rate / 60) if not self.rpm else self._requests
            elif kind == "tokens" and rate != self.tpm:
                self.tpm, self._tokens = rate, max(1.0, rate / 60) if not self.tpm else self._tokens


_SHARED: dict[tuple, Throttle] = {}
_SHARED_LOCK = threading.Lock()


def shared_throttle(endpoint: str, start: int, ceiling: int, rpm: float, tpm: float, workers: int = 1) -> Throttle:
    """The one throttle of this worker process for an endpoint and budget (every stage gets the same)."""
    key = (endpoint, start, ceiling, rpm, tpm, workers)
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = Throttle(start, ceiling, rpm, tpm, workers=workers)
        return _SHARED[key]
