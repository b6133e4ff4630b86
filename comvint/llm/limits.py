"""Per-worker request and token rate limits, and a shared pause while the endpoint says 429."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

Sleep = Callable[[float], Awaitable[None]]


class RateLimiter:
    """Token buckets for requests/minute and tokens/minute (0 disables), plus a 429 pause."""

    def __init__(self, rpm: float, tpm: float, clock: Callable[[], float] = time.monotonic, sleep: Sleep = asyncio.sleep):
        self._rpm, self._tpm, self._clock, self._sleep = rpm, tpm, clock, sleep
        now = clock()
        self._requests, self._tokens, self._last = rpm / 60.0, tpm / 60.0, now
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    def pause(self, seconds: float) -> None:
        """Hold every new request for ``seconds`` (the endpoint is rate limiting us)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    def _refill(self) -> None:
        now = self._clock()
        elapsed, self._last = now - self._last, now
        # Buckets hold at most one second's worth, so bursts stay small.
        self._requests = min(self._rpm / 60.0, self._requests + elapsed * self._rpm / 60.0)
        self._tokens = min(max(self._tpm / 60.0, 1.0), self._tokens + elapsed * self._tpm / 60.0)

    def _wait_time(self, tokens: int) -> float:
        wait = max(0.0, self._paused_until - self._clock())
        if self._rpm and self._requests < 1:
            wait = max(wait, (1 - self._requests) * 60.0 / self._rpm)
        if self._tpm and self._tokens < min(tokens, self._tpm / 60.0):
            wait = max(wait, (min(tokens, self._tpm / 60.0) - self._tokens) * 60.0 / self._tpm)
        return wait

    async def acquire(self, tokens: int = 0) -> float:
        """Wait until a request of about ``tokens`` tokens may start; return seconds waited."""
        if not self._rpm and not self._tpm and self._paused_until <= self._clock():
            return 0.0  # no limits and no 429 pause: no lock, no bookkeeping
        waited = 0.0
        async with self._lock:
            while True:
                self._refill()
                wait = self._wait_time(tokens)
                if wait <= 0:
                    break
                await self._sleep(wait)
                waited += wait
            if self._rpm:
                self._requests -= 1
            if self._tpm:
                self._tokens -= tokens
        return waited
