"""Backends that answer a chat request: an OpenAI-compatible endpoint, or the offline engine."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
from typing import Any, Protocol

from comvint.llm.config import LLMConfig


@dataclasses.dataclass(frozen=True)
class Reply:
    """What a backend returned for one request."""

    text: str
    finish_reason: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str = ""
    headers: dict[str, str] = dataclasses.field(default_factory=dict)  # the rate-limit headers of the response
    usage_anomaly: str = ""  # usage counts the endpoint sent that were not counts (replaced by estimates)


class Backend(Protocol):
    name: str

    async def complete(
        self, call: Any, model: str, max_tokens: int | None = None, seed: int | None = None
    ) -> Reply: ...

    async def close(self) -> None: ...


RATE_HEADERS = ("x-ratelimit-", "retry-after")


def response_format(kind: str, name: str, schema: dict[str, Any]) -> dict[str, Any] | None:
    """The ``response_format`` request field for ``json_schema`` / ``json_object`` / ``text``."""
    if kind == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}
    if kind == "json_object":
        return {"type": "json_object"}
    return None


def request_body(
    config: LLMConfig, call: Any, model: str, max_tokens: int | None = None, seed: int | None = None
) -> dict[str, Any]:
    """The Chat Completions request of a call (sent online, or as one line of a batch file)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": call.messages,
        "temperature": config.temperature_for(call.stage),
        "max_tokens": max_tokens or config.max_tokens,
    }
    if seed is not None:
        body["seed"] = seed
    fmt = response_format(config.response_format, call.schema_name, call.schema)
    if fmt is not None:
        body["response_format"] = fmt
    return body


def text_chars(content: Any) -> int:
    """Characters of a message's text (a list of parts counts its text parts; pictures are priced apart)."""
    if isinstance(content, list):
        return sum(
            len(part.get("text", "")) for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return len(str(content or ""))


def token_count(value: Any) -> int | None:
    """A usage count as sent, if it is one: a finite, non-negative integer (``12.0`` is 12); None otherwise
    (negative, NaN, infinite, a string, a bool), so a lying endpoint cannot defeat the cost cap or crash the job."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        return None
    return int(value) if 0 <= value < 1 << 40 else None


def reply_from_json(
    completion: dict[str, Any], model: str, headers: dict[str, str] | None = None, prompt_chars: int = 0
) -> Reply:
    """A Chat Completions response body -> Reply. Missing usage counts as zero; usage that is not a count is
    replaced by an estimate from the text (4 characters a token) and the reply says so (``usage_anomaly``)."""
    choice = (completion.get("choices") or [{}])[0]
    usage = completion.get("usage") if isinstance(completion.get("usage"), dict) else {}
    text = (choice.get("message") or {}).get("content") or ""
    text = text if isinstance(text, str) else json.dumps(text)
    counts, anomalies = {}, []
    for field, estimate in (("prompt_tokens", prompt_chars // 4), ("completion_tokens", len(text) // 4)):
        sent = usage.get(field)
        counts[field] = 0 if sent is None else token_count(sent)
        if counts[field] is None:
            counts[field] = estimate
            anomalies.append(f"{field}={str(sent)[:40]!r}")
    return Reply(
        text=text,
        finish_reason=choice.get("finish_reason") or "stop",
        model=str(completion.get("model") or model),
        headers=headers or {},
        usage_anomaly=", ".join(anomalies),
        **counts,
    )


def reply_from_body(body: bytes, model: str, headers: dict[str, str] | None = None, prompt_chars: int = 0) -> Reply:
    """A response body -> Reply; a body that is not a Chat Completions JSON object is a retryable ReplyError."""
    from comvint.llm.retry import ReplyError

    text = body.decode("utf-8", errors="replace")
    try:
        completion = json.loads(text)
    except json.JSONDecodeError as err:
        raise ReplyError("invalid_body", f"the response body is not JSON: {err}", text[:2000]) from None
    if not isinstance(completion, dict):
        raise ReplyError("invalid_body", "the response body is not a JSON object", text[:2000])
    return reply_from_json(completion, model, headers, prompt_chars)


class OpenAIBackend:
    """Chat Completions on any OpenAI-compatible endpoint through ``AsyncOpenAI``.

    SDK retries are off (the runner owns the one retry layer); the aiohttp
    transport is used because it spends a fraction of the default transport's
    CPU per request. Create it inside the event loop that will use it.
    """

    name = "openai"

    def __init__(self, config: LLMConfig, api_key: str) -> None:
        import httpx2
        import openai

        self._config, self._raw = config, httpx2.Response
        self._client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=config.base_url,
            max_retries=0,
            timeout=config.timeout,
            http_client=openai.DefaultAioHttpClient(timeout=config.timeout),
        )

    async def complete(self, call: Any, model: str, max_tokens: int | None = None, seed: int | None = None) -> Reply:
        body = request_body(self._config, call, model, max_tokens, seed)
        # The SDK's raw POST: same client, auth, timeouts and error types, without its
        # typed request transform and response models (most of its CPU per request).
        # --llm_timeout bounds the whole request, not each read: an endpoint that trickles a byte at a time
        # cannot hold a call (and its worker) for ever.
        response = await asyncio.wait_for(
            self._client.post("/chat/completions", cast_to=self._raw, body=body), self._config.timeout
        )
        headers = {k.lower(): v for k, v in response.headers.items() if k.lower().startswith(RATE_HEADERS)}
        return reply_from_body(
            response.content, model, headers, sum(text_chars(m.get("content")) for m in body["messages"])
        )

    async def close(self) -> None:
        await self._client.close()


class OfflineBackend:
    """The built-in engine (:mod:`comvint.engine`): answers a call from its stage and structured context."""

    name = "offline"

    async def complete(self, call: Any, model: str, max_tokens: int | None = None, seed: int | None = None) -> Reply:
        from comvint import engine

        return Reply(
            text=json.dumps(engine.answer(call.stage, call.context), sort_keys=True),
            finish_reason="stop",
            model="offline",
        )

    async def close(self) -> None:
        return None
