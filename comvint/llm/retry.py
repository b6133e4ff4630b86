"""One retry policy: which errors retry, and how long to wait (capped exponential + jitter)."""

from __future__ import annotations

import asyncio
import random

import openai


class ReplyError(Exception):
    """A reply that arrived but cannot be used (truncated, filtered, invalid JSON or schema, a body that is not
    JSON)."""

    def __init__(self, reason: str, detail: str, raw: str | None = None, finish_reason: str = "stop") -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.raw, self.finish_reason = reason, detail, raw, finish_reason


class UnusableReply(Exception):
    """A schema-valid reply its stage cannot use (``reason`` is the stage's code): another sample may be usable."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


class BatchLineError(Exception):
    """One batch line that did not come back with a reply: ``cause`` names why (``batch_http_500``,
    ``batch_expired``, ``batch_cancelled``, ...); a retryable one goes into the next batch."""

    def __init__(self, cause: str, detail: str, retryable: bool) -> None:
        super().__init__(f"{cause}: {detail}")
        self.cause, self.detail, self.retryable = cause, detail, retryable


def classify(exc: BaseException) -> tuple[bool, str]:
    """``(retryable, cause)`` for an exception raised by a call.

    429, 408/409, 5xx, timeouts and dropped connections retry; other 4xx are
    permanent; unusable replies retry (a new sample may be valid).
    """
    if isinstance(exc, ReplyError):
        return exc.reason != "oversized_reply", exc.reason  # another sample of a runaway reply is paid again
    if isinstance(exc, UnusableReply):
        return True, "unusable"
    if isinstance(exc, BatchLineError):
        return exc.retryable, exc.cause
    if isinstance(exc, openai.APITimeoutError):
        return True, "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return True, "connection"
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status == 429:
            return True, "rate_limited"
        if status in (408, 409) or status >= 500:
            return True, f"http_{status}"
        return False, f"http_{status}"
    if isinstance(exc, asyncio.TimeoutError):
        return True, "timeout"
    return False, type(exc).__name__


def retry_after_seconds(exc: BaseException) -> float | None:
    """The server's ``retry-after-ms`` or ``Retry-After`` (seconds) on a status error, if it sent one."""
    from comvint.llm.throttle import retry_after

    response = getattr(exc, "response", None)
    return retry_after(dict(response.headers)) if response is not None else None


def backoff(attempt: int, base: float, cap: float, rng: random.Random, retry_after: float | None = None) -> float:
    """Seconds to wait before retry ``attempt`` (1-based): full jitter, capped; honours Retry-After."""
    delay = rng.uniform(0, min(cap, base * 2 ** (attempt - 1)))
    return max(delay, min(retry_after, cap)) if retry_after is not None else delay
