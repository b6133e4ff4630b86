"""Run a batch of stage calls concurrently: cache, rate limits, one retry layer, validation.

Every call ends as exactly one :class:`Outcome`: a validated reply, or a
failure reason with the raw reply kept. Nothing raises for an expected failure,
so a runner never has to retry a whole bundle (and pay again for its successes).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import jsonschema

from comvint.llm.cache import ResponseCache, cache_key
from comvint.llm.client import Backend, Reply
from comvint.llm.config import LLMConfig
from comvint.llm.limits import RateLimiter
from comvint.llm.retry import ReplyError, backoff, classify, retry_after_seconds

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


def parse_reply(reply: Reply, schema: dict[str, Any]) -> dict[str, Any]:
    """Check the finish reason, parse JSON (tolerating a code fence or prose around it), validate the schema."""
    if reply.finish_reason in ("length", "content_filter"):
        reason = "truncated" if reply.finish_reason == "length" else "content_filter"
        raise ReplyError(reason, f"finish_reason={reply.finish_reason}", reply.text)
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


LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def latency_bucket(seconds: float) -> str:
    """The histogram bucket of one request's latency: ``le_<bound>s``, or ``gt_<last>s``."""
    for bound in LATENCY_BUCKETS:
        if seconds <= bound:
            return f"le_{bound:g}s"
    return f"gt_{LATENCY_BUCKETS[-1]:g}s"


def estimate_tokens(messages: list[dict[str, Any]]) -> int:
    """A cheap prompt-size estimate for the tokens-per-minute limit (4 chars per token)."""
    return sum(len(str(m.get("content", ""))) for m in messages) // 4 + 8


class StageRunner:
    """Runs calls with bounded concurrency on one backend (one per worker)."""

    def __init__(
        self,
        config: LLMConfig,
        backend: Backend,
        cache: ResponseCache | None = None,
        limiter: RateLimiter | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.config, self.backend, self.cache = config, backend, cache
        self.limiter = limiter or RateLimiter(config.rpm, config.tpm, sleep=sleep)
        self._sleep, self._rng = sleep, rng or random.Random(0)
        self._slots = asyncio.Semaphore(config.concurrency)

    async def run(self, calls: list[Call]) -> list[Outcome]:
        return list(await asyncio.gather(*(self._bounded(call) for call in calls)))

    async def _bounded(self, call: Call) -> Outcome:
        async with self._slots:
            return await self.run_one(call)

    def key(self, call: Call, model: str) -> str:
        params = {"temperature": self.config.temperature_for(call.stage), "max_tokens": self.config.max_tokens}
        return cache_key(
            base_url=self.config.base_url,
            model=model,
            messages=call.messages,
            params=params,
            schema=call.schema,
            response_format=self.config.response_format,
            prompt_version=call.prompt_version,
        )

    async def run_one(self, call: Call) -> Outcome:
        model = self.config.model_for(call.stage) if self.backend.name != "offline" else "offline"
        usage: dict[str, Any] = {"calls": 1}
        key = self.key(call, model) if self.cache is not None else ""
        cached = await self._in_cache(self.cache.get, key) if self.cache is not None else None
        if cached is not None:
            usage["cache_hits"] = 1
            try:
                return Outcome(call, parse_reply(Reply(**cached["reply"]), call.schema), cached["reply"]["text"], usage=usage)
            except ReplyError as err:
                return Outcome(call, raw=err.raw, reason=f"{call.stage}_{err.reason}", detail=err.detail, usage=usage)
        return await self._with_retries(call, model, key, usage)

    async def _in_cache(self, method: Callable[..., Any], *args: Any) -> Any:
        """Call a cache method inline when its store is fast, else from a worker thread."""
        return method(*args) if self.cache.fast else await asyncio.to_thread(method, *args)

    async def _with_retries(self, call: Call, model: str, key: str, usage: dict[str, Any]) -> Outcome:
        raw: str | None = None
        for attempt in range(self.config.max_retries + 1):
            try:
                reply = await self._request(call, model, usage)
                raw = reply.text
                value = parse_reply(reply, call.schema)
                if self.cache is not None:
                    await self._in_cache(self.cache.put, key, {"reply": dataclasses.asdict(reply)})
                return Outcome(call, value, raw, usage=usage)
            except Exception as exc:  # noqa: BLE001 - classified below; unknown errors re-raise
                retryable, cause = classify(exc)
                raw = getattr(exc, "raw", raw)
                if not retryable and not _is_api_error(exc):
                    raise
                if not retryable or attempt == self.config.max_retries:
                    usage["failures"] = 1
                    suffix = "exhausted_retries" if retryable else "permanent_error"
                    return Outcome(call, raw=raw, reason=f"{call.stage}_{suffix}", detail=f"{cause}: {exc}"[:500], usage=usage)
                usage.setdefault("retries", {})
                usage["retries"][cause] = usage["retries"].get(cause, 0) + 1
                await self._wait_before_retry(exc, attempt + 1, cause)
        raise AssertionError("unreachable")

    async def _request(self, call: Call, model: str, usage: dict[str, Any]) -> Reply:
        await self.limiter.acquire(estimate_tokens(call.messages) + self.config.max_tokens // 4)
        start = time.perf_counter()
        usage["requests"] = usage.get("requests", 0) + 1
        try:
            reply = await self.backend.complete(call, model)
        finally:
            elapsed = time.perf_counter() - start
            usage["latency_ms"] = usage.get("latency_ms", 0.0) + elapsed * 1000
            histogram, bucket = usage.setdefault("latency_histogram", {}), latency_bucket(elapsed)
            histogram[bucket] = histogram.get(bucket, 0) + 1
        usage["prompt_tokens"] = usage.get("prompt_tokens", 0) + reply.prompt_tokens
        usage["completion_tokens"] = usage.get("completion_tokens", 0) + reply.completion_tokens
        cost = self.config.cost(model, reply.prompt_tokens, reply.completion_tokens)
        if cost is not None:
            usage["cost"] = usage.get("cost", 0.0) + cost
        return reply

    async def _wait_before_retry(self, exc: BaseException, attempt: int, cause: str) -> None:
        retry_after = retry_after_seconds(exc)
        if cause == "rate_limited":
            self.limiter.pause(retry_after if retry_after is not None else self.config.backoff_base * 2**attempt)
        await self._sleep(backoff(attempt, self.config.backoff_base, self.config.backoff_cap, self._rng, retry_after))


def _is_api_error(exc: BaseException) -> bool:
    import openai

    return isinstance(exc, (openai.OpenAIError, asyncio.TimeoutError))
