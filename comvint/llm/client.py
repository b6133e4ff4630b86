"""Backends that answer a chat request: an OpenAI-compatible endpoint, or the offline engine."""

from __future__ import annotations

import dataclasses
import json
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


class Backend(Protocol):
    name: str

    async def complete(self, call: Any, model: str, max_tokens: int | None = None, seed: int | None = None) -> Reply: ...

    async def close(self) -> None: ...


RATE_HEADERS = ("x-ratelimit-", "retry-after")


def response_format(kind: str, name: str, schema: dict[str, Any]) -> dict[str, Any] | None:
    """The ``response_format`` request field for ``json_schema`` / ``json_object`` / ``text``."""
    if kind == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}
    if kind == "json_object":
        return {"type": "json_object"}
    return None


def request_body(config: LLMConfig, call: Any, model: str, max_tokens: int | None = None, seed: int | None = None) -> dict[str, Any]:
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


def reply_from_json(completion: dict[str, Any], model: str, headers: dict[str, str] | None = None) -> Reply:
    """A Chat Completions response body -> Reply (missing usage counts as zero)."""
    choice = (completion.get("choices") or [{}])[0]
    usage = completion.get("usage") or {}
    return Reply(
        text=(choice.get("message") or {}).get("content") or "",
        finish_reason=choice.get("finish_reason") or "stop",
        prompt_tokens=usage.get("prompt_tokens") or 0,
        completion_tokens=usage.get("completion_tokens") or 0,
        model=completion.get("model") or model,
        headers=headers or {},
    )


def reply_from_body(body: bytes, model: str, headers: dict[str, str] | None = None) -> Reply:
    """A response body -> Reply; a body that is not a Chat Completions JSON object is a retryable ReplyError."""
    from comvint.llm.retry import ReplyError

    text = body.decode("utf-8", errors="replace")
    try:
        completion = json.loads(text)
    except json.JSONDecodeError as err:
        raise ReplyError("invalid_body", f"the response body is not JSON: {err}", text[:2000]) from None
    if not isinstance(completion, dict):
        raise ReplyError("invalid_body", "the response body is not a JSON object", text[:2000])
    return reply_from_json(completion, model, headers)


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
        response = await self._client.post("/chat/completions", cast_to=self._raw, body=body)
        headers = {k.lower(): v for k, v in response.headers.items() if k.lower().startswith(RATE_HEADERS)}
        return reply_from_body(response.content, model, headers)

    async def close(self) -> None:
        await self._client.close()


class OfflineBackend:
    """The built-in engine (:mod:`comvint.engine`): answers a call from its stage and structured context."""

    name = "offline"

    async def complete(self, call: Any, model: str, max_tokens: int | None = None, seed: int | None = None) -> Reply:
        from comvint import engine

        return Reply(text=json.dumps(engine.answer(call.stage, call.context), sort_keys=True), finish_reason="stop", model="offline")

    async def close(self) -> None:
        return None
