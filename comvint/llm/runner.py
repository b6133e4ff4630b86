"""Run a batch of stage calls concurrently: cache, rate limits, one retry layer, validation.

Every call ends as exactly one :class:`Outcome`: a validated reply, or a
failure reason with the raw reply kept. Nothing raises for an expected failure,
so a runner never has to retry a whole bundle (and pay again for its successes).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import jsonschema

from comvint.llm.budget import BUDGET_EXHAUSTED, Budget, BudgetExhausted
from comvint.llm.cache import ResponseCache, cache_key
from comvint.llm.client import Backend, Reply, text_chars
from comvint.llm.config import LLMConfig
from comvint.llm.retry import BatchLineError, ReplyError, UnusableReply, backoff, classify, retry_after_seconds
from comvint.llm.throttle import Throttle

_LOGGER = logging.getLogger(__name__)
_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.S)


@dataclasses.dataclass(frozen=True)
class Call:
    """One request a stage makes for one item."""

    item_id: str
    stage: str
    messages: list[dict[str, Any]]
    schema_name: str
    schema: dict[str, Any]
    prompt_version: str
    context: dict[str, Any] | None = None  # structured input for an engine that answers without the messages
    images: tuple[
        str, ...
    ] = ()  # the pictures the messages carry: original SHA-256 and settings (what the cache key names)
    image_tokens: int = 0  # what those pictures cost in prompt tokens on the stage's model


@dataclasses.dataclass
class Outcome:
    """The end of one call: ``reply`` (parsed JSON) or ``reason`` (a failure code)."""

    call: Call
    reply: dict[str, Any] | None = None
    raw: str | None = None
    reason: str | None = None
    detail: str = ""
    usage: dict[str, Any] = dataclasses.field(default_factory=dict)


def json_text(text: str) -> str:
    """The JSON inside a reply: the whole text, a fenced block, or the outermost ``{...}`` in prose."""
    text = text.strip()
    fenced = _FENCE.match(text)
    if fenced:
        return fenced.group(1)
    if text.startswith("{"):
        return text
    start, end = text.find("{"), text.rfind("}")
    return text[start : end + 1] if 0 <= start < end else text


MAX_REPLY_CHARS = 64_000  # a stage's reply is a few thousand characters; a larger one is refused, not kept
RAW_EXCERPT = 2_000  # characters of a refused reply kept in its failure record


def parse_reply(reply: Reply, schema: dict[str, Any]) -> dict[str, Any]:
    """Check the size and the finish reason, parse JSON (tolerating a code fence or prose around it), validate the
    schema."""
    if len(reply.text) > MAX_REPLY_CHARS:
        raise ReplyError(
            "oversized_reply",
            f"{len(reply.text):,} characters, more than {MAX_REPLY_CHARS:,}",
            reply.text[:RAW_EXCERPT],
        )
    if reply.finish_reason in ("length", "content_filter"):
        reason = "truncated" if reply.finish_reason == "length" else "content_filter"
        raise ReplyError(reason, f"finish_reason={reply.finish_reason}", reply.text, reply.finish_reason)
    try:
        value = json.loads(json_text(reply.text))
    except json.JSONDecodeError as err:
        raise ReplyError("invalid_json", str(err), reply.text) from None
    error = jsonschema.exceptions.best_match(validator(schema).iter_errors(value))
    if error is not None:
        raise ReplyError("schema_violation", error.message[:300], reply.text)
    return value


_VALIDATORS: dict[str, Any] = {}


def validator(schema: dict[str, Any]) -> Any:
    """A checked, compiled validator per schema (building one per reply costs more than the request)."""
    key = json.dumps(schema, sort_keys=True)
    if key not in _VALIDATORS:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        _VALIDATORS[key] = cls(schema)
    return _VALIDATORS[key]


REPLY_FIELDS = (
    "text",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "model",
)  # what the cache keeps of a reply
Check = Callable[["Call", dict[str, Any]], None]
START_IN_FLIGHT = 32  # the throttle's first in-flight limit; it grows while the endpoint keeps up
MAX_TOKENS_GROWTH = 4  # a truncated reply is retried with up to this many times --llm_max_tokens
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def latency_bucket(seconds: float) -> str:
    """The histogram bucket of one request's latency: ``le_<bound>s``, or ``gt_<last>s``."""
    for bound in LATENCY_BUCKETS:
        if seconds <= bound:
            return f"le_{bound:g}s"
    return f"gt_{LATENCY_BUCKETS[-1]:g}s"


def estimate_tokens(call: Call) -> int:
    """A cheap prompt-size estimate for the tokens-per-minute limit and the cost cap: 4 characters of text
    per token, plus the call's image tokens."""
    return sum(text_chars(m.get("content")) for m in call.messages) // 4 + 8 + call.image_tokens


def call_key(config: LLMConfig, call: Call, model: str) -> str:
    """The cache key of a call (also its ``custom_id`` in a batch file)."""
    params = {"temperature": config.temperature_for(call.stage), "max_tokens": config.max_tokens}
    return cache_key(
        base_url=config.endpoint,
        model=model,
        messages=call.messages,
        params=params,
        schema=call.schema,
        response_format=config.response_format,
        prompt_version=call.prompt_version,
        images=call.images,
    )


class StageRunner:
    """Runs calls with bounded concurrency on one backend, behind the worker's shared throttle.

    Every call ends as one :class:`Outcome`; no exception of one call escapes (an
    unexpected one becomes a failure with its reason), so a bundle never fails for a
    call and nothing is paid twice. ``check(call, reply)`` may raise ``ParseError`` for a
    schema-valid reply its stage cannot use: the call is retried with another seed,
    within the retry budget. A truncated reply is retried with twice the ``max_tokens``
    (up to :data:`MAX_TOKENS_GROWTH` times the setting). Only the final reply of a call
    is cached, and when two workers race on a key, the loser takes the winner's reply,
    so the output always equals what the cache holds.
    """

    def __init__(
        self,
        config: LLMConfig,
        backend: Backend,
        cache: ResponseCache | None = None,
        throttle: Throttle | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        budget: Budget | None = None,
    ) -> None:
        self.config, self.backend, self.cache = config, backend, cache
        self.throttle = throttle or Throttle(
            min(config.concurrency, START_IN_FLIGHT), config.concurrency, config.rpm, config.tpm
        )
        self.budget = budget or Budget(config.max_cost_usd)
        # A batch backend queues requests into batch files: no request rate, in-flight limit or backoff applies,
        # since every call of a bundle must be queued before its batch is sent (a retry is the next batch).
        self.batch = bool(getattr(backend, "batch", False))
        self._sleep, self._rng = sleep, rng or random.Random(0)
        self._slots = asyncio.Semaphore(config.concurrency if not self.batch else 1 << 30)
        self.finished = 0  # calls that reached their outcome (a batch driver compares it with the backend's queue)

    async def run(self, calls: list[Call], check: Check | None = None) -> list[Outcome]:
        """Every call's outcome; ``check(call, reply)`` raises :class:`UnusableReply` for a reply the stage cannot
        use."""
        return list(await asyncio.gather(*(self._bounded(call, check) for call in calls)))

    async def _bounded(self, call: Call, check: Check | None) -> Outcome:
        async with self._slots:
            try:
                return await self.run_one(call, check)
            except Exception as exc:  # noqa: BLE001 - one call's surprise is that call's dead letter, never the bundle's
                return Outcome(
                    call,
                    reason=f"{call.stage}_unexpected_error",
                    detail=f"{type(exc).__name__}: {exc}"[:500],
                    usage={"calls": 1, "failures": 1},
                )
            finally:
                self.finished += 1

    def key(self, call: Call, model: str) -> str:
        return call_key(self.config, call, model)

    async def run_one(self, call: Call, check: Check | None = None) -> Outcome:
        model = self.config.model_for(call.stage) if self.backend.name != "offline" else "offline"
        usage: dict[str, Any] = {"calls": 1}
        key = self.key(call, model) if self.cache is not None else ""
        if self.cache is not None:
            try:
                cached = await self._in_cache(self.cache.get, key)
            except Exception as exc:  # noqa: BLE001 - a cache that cannot be read: the call is not made (or paid)
                return Outcome(
                    call,
                    reason=f"{call.stage}_cache_error",
                    detail=f"read: {exc}"[:500],
                    usage={**usage, "failures": 1},
                )
            if cached is not None:
                usage["cache_hits"] = 1
                return self._replay(call, cached, usage, check)
        return await self._with_retries(call, model, key, usage, check)

    def _replay(self, call: Call, cached: dict[str, Any], usage: dict[str, Any], check: Check | None) -> Outcome:
        """The outcome a cached reply gives (the same as when it was first received)."""
        reply = Reply(**{k: cached[k] for k in REPLY_FIELDS if k in cached})
        try:
            value = parse_reply(reply, call.schema)
            if check is not None:
                check(call, value)
            return Outcome(call, value, reply.text, usage=usage)
        except ReplyError as err:
            return Outcome(call, raw=err.raw, reason=f"{call.stage}_{err.reason}", detail=err.detail, usage=usage)
        except UnusableReply as err:
            return Outcome(call, raw=reply.text, reason=f"{call.stage}_{err.reason}", detail=err.detail, usage=usage)

    async def _in_cache(self, method: Callable[..., Any], *args: Any) -> Any:
        """Call a cache method inline when its store is fast, else from a worker thread."""
        return method(*args) if self.cache.fast else await asyncio.to_thread(method, *args)

    async def _with_retries(
        self, call: Call, model: str, key: str, usage: dict[str, Any], check: Check | None
    ) -> Outcome:
        raw: str | None = None
        max_tokens, seed = self.config.max_tokens, None
        retries = self.config.max_retries if self.backend.name != "offline" else 0  # the engine is deterministic
        for attempt in range(retries + 1):
            try:
                reply = await self._request(call, model, usage, max_tokens, seed)
                raw = reply.text
                value = parse_reply(reply, call.schema)
                if check is not None:
                    check(call, value)
                return await self._final(call, key, reply, Outcome(call, value, raw, usage=usage), check)
            except BudgetExhausted as exc:  # not sent, not paid: a rerun with a higher cap continues from the cache
                usage["failures"] = 1
                return Outcome(call, raw=raw, reason=BUDGET_EXHAUSTED, detail=str(exc)[:500], usage=usage)
            except Exception as exc:  # noqa: BLE001 - classified below
                retryable, cause = classify(exc)
                raw = getattr(exc, "raw", raw)
                if not retryable or attempt == retries:
                    usage["failures"] = 1
                    suffix = failure_suffix(exc, retryable)
                    failed = Outcome(
                        call, raw=raw, reason=f"{call.stage}_{suffix}", detail=f"{cause}: {exc}"[:500], usage=usage
                    )
                    if isinstance(exc, (ReplyError, UnusableReply)) and raw is not None:
                        return await self._final(
                            call, key, Reply(raw, getattr(exc, "finish_reason", "stop")), failed, check
                        )
                    return failed
                usage.setdefault("retries", {})
                usage["retries"][cause] = usage["retries"].get(cause, 0) + 1
                if cause == "truncated":
                    max_tokens = min(max_tokens * 2, self.config.max_tokens * MAX_TOKENS_GROWTH)
                if cause == "unusable":
                    seed = attempt + 1  # another sample, not the same request again
                if not self.batch:
                    await self._sleep(
                        backoff(
                            attempt + 1,
                            self.config.backoff_base,
                            self.config.backoff_cap,
                            self._rng,
                            retry_after_seconds(exc),
                        )
                    )
        raise AssertionError("unreachable")

    async def _final(self, call: Call, key: str, reply: Reply, outcome: Outcome, check: Check | None) -> Outcome:
        """Cache a call's final reply (write-once); if another worker won the race, take its reply instead."""
        if self.cache is None:
            return outcome
        try:
            stored = await self._in_cache(self.cache.put, key, {k: getattr(reply, k) for k in REPLY_FIELDS})
            if stored:
                return outcome
            winner = await self._in_cache(self.cache.get, key)
        except Exception as exc:  # noqa: BLE001 - the reply was paid for but cannot be kept: say so, with it
            return Outcome(
                call,
                raw=reply.text,
                reason=f"{call.stage}_cache_error",
                detail=f"write: {exc}"[:500],
                usage={**outcome.usage, "failures": 1},
            )
        if winner is None:
            return outcome
        replayed = self._replay(call, winner, outcome.usage, check)
        replayed.usage["cache_races_lost"] = 1
        return replayed

    async def _request(self, call: Call, model: str, usage: dict[str, Any], max_tokens: int, seed: int | None) -> Reply:
        prompt_tokens = estimate_tokens(call)
        reserved = self.budget.reserve(self.config.estimated_cost(model, prompt_tokens, max_tokens))
        if not self.batch:
            await self.throttle.acquire(prompt_tokens + max_tokens // 4)
        start = time.perf_counter()
        usage["requests"] = usage.get("requests", 0) + 1
        refused, headers, cost = False, {}, 0.0
        try:
            reply = await self.backend.complete(call, model, max_tokens=max_tokens, seed=seed)
            headers = reply.headers
            cost = self.config.cost(model, reply.prompt_tokens, reply.completion_tokens) or 0.0
        except Exception as exc:
            refused = classify(exc)[1] == "rate_limited"
            headers = dict(getattr(getattr(exc, "response", None), "headers", {}) or {})
            raise
        finally:
            self.budget.settle(reserved, cost)
            if not self.batch:
                self.throttle.done(refused, headers)
            elapsed = time.perf_counter() - start
            usage["latency_ms"] = usage.get("latency_ms", 0.0) + elapsed * 1000
            histogram, bucket = usage.setdefault("latency_histogram", {}), latency_bucket(elapsed)
            histogram[bucket] = histogram.get(bucket, 0) + 1
        if reply.usage_anomaly:  # counted, estimated from the text, and said once per reply
            usage["usage_anomalies"] = usage.get("usage_anomalies", 0) + 1
            _LOGGER.warning(
                "Stage %s: the endpoint's usage was not a count (%s): estimated from the text",
                call.stage,
                reply.usage_anomaly,
            )
        usage["prompt_tokens"] = usage.get("prompt_tokens", 0) + reply.prompt_tokens
        usage["completion_tokens"] = usage.get("completion_tokens", 0) + reply.completion_tokens
        if call.images:  # what the pictures cost, inside prompt_tokens (the provider counts them there)
            usage["images"] = usage.get("images", 0) + len(call.images)
            usage["image_tokens"] = usage.get("image_tokens", 0) + call.image_tokens
        cost = self.config.cost(model, reply.prompt_tokens, reply.completion_tokens)
        if cost is not None:
            usage["cost"] = usage.get("cost", 0.0) + cost
        return reply


def failure_suffix(exc: BaseException, retryable: bool) -> str:
    """How a call's last error names its dead letter: the stage's own reason for an unusable reply,
    ``oversized_reply``, ``exhausted_retries``, ``permanent_error`` (a 4xx), ``batch_cancelled`` / ``batch_failed`` (a
    batch that
    ended without the line), or ``unexpected_error`` (anything else)."""
    import openai

    if isinstance(exc, UnusableReply) or isinstance(exc, ReplyError) and not retryable:
        return exc.reason  # a stage's own reason, or a reply refused outright (oversized_reply)
    if retryable:
        return "exhausted_retries"
    if isinstance(exc, BatchLineError) and not exc.cause.startswith("batch_http_"):
        return exc.cause  # batch_cancelled, batch_failed: the whole batch ended without this line
    return (
        "permanent_error" if isinstance(exc, (openai.OpenAIError, ReplyError, BatchLineError)) else "unexpected_error"
    )
