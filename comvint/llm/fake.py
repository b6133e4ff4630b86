"""A fake OpenAI-compatible Chat Completions server on 127.0.0.1, with fault injection.

Used by the tests and benchmarks (and handy to try an installation without an
endpoint). It runs in a background thread with its own event loop:

    with FakeOpenAI(responder=lambda body: '{"ok": true}') as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="x")

``faults(body, attempt)`` may return one of :data:`FAULTS` for a request
(``attempt`` counts requests with the same last user message, from 1).
"""

from __future__ import annotations

import asyncio
import collections
import json
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

from aiohttp import web

FAULTS = ("429", "500", "400", "slow", "drop", "invalid_json", "truncated", "content_filter", "garbage_body")
QUOTA_WINDOW_S = 60.0
Responder = Callable[[dict[str, Any]], str]
Faults = Callable[[dict[str, Any], int], "str | None"]


def last_user_message(body: dict[str, Any]) -> str:
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    return str(users[-1]["content"]) if users else ""


class FakeOpenAI:
    """An OpenAI-compatible HTTP server with scripted replies, latency and faults."""

    def __init__(
        self,
        responder: Responder,
        faults: Faults | None = None,
        latency: float = 0.0,
        slow_seconds: float = 5.0,
        retry_after: float = 0.0,
        quota_rpm: int = 0,
    ) -> None:
        self.responder, self.faults = responder, faults or (lambda body, attempt: None)
        self.latency, self.slow_seconds, self.retry_after = latency, slow_seconds, retry_after
        self.quota_rpm = quota_rpm
        self._window: collections.deque[float] = collections.deque()
        self.accepted: list[float] = []  # when each request the quota let through arrived
        self.refused = 0
        self.attempts: collections.Counter[str] = collections.Counter()
        self.requests: list[dict[str, Any]] = []
        self.authorizations: set[str] = set()
        self.in_flight = self.max_in_flight = 0
        self._first_request: float | None = None
        self._last_reply = 0.0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    def __exit__(self, *exc: Any) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_get("/stats", self._stats)
        app.router.add_post("/stats/reset", self._reset)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    async def _stats(self, request: web.Request) -> web.StreamResponse:
        """Counters, and the span from the first request to the last reply since the last reset."""
        span = self._last_reply - self._first_request if self._first_request is not None else 0.0
        return web.json_response({"requests": len(self.requests), "max_in_flight": self.max_in_flight, "span_s": round(span, 4),
                                  "accepted": len(self.accepted), "refused": self.refused,
                                  "accepted_at": [round(t, 4) for t in self.accepted]})

    async def _reset(self, request: web.Request) -> web.StreamResponse:
        self._first_request, self._last_reply, self.max_in_flight = None, 0.0, 0
        return await self._stats(request)

    def _quota(self) -> tuple[bool, dict[str, str]]:
        """With ``quota_rpm``: whether this request fits the last minute's budget, and OpenAI's rate-limit headers."""
        if not self.quota_rpm:
            return True, {}
        now = time.monotonic()
        while self._window and self._window[0] <= now - QUOTA_WINDOW_S:
            self._window.popleft()
        allowed = len(self._window) < self.quota_rpm
        if allowed:
            self._window.append(now)
            self.accepted.append(time.perf_counter())
        else:
            self.refused += 1
        reset = (self._window[0] + QUOTA_WINDOW_S - now) if self._window else 0.0
        headers = {"x-ratelimit-limit-requests": str(self.quota_rpm),
                   "x-ratelimit-remaining-requests": str(max(0, self.quota_rpm - len(self._window))),
                   "x-ratelimit-reset-requests": f"{max(reset, 0.001):.3f}s"}
        if not allowed:
            headers |= {"retry-after-ms": str(int(reset * 1000) + 1), "retry-after": str(int(reset) + 1)}
        return allowed, headers

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.authorizations.add(request.headers.get("Authorization", ""))
        body = await request.json()
        allowed, quota_headers = self._quota()
        if not allowed:
            return web.json_response({"error": {"message": "Rate limit reached for requests"}}, status=429, headers=quota_headers)
        self.requests.append(body)
        key = last_user_message(body)
        self.attempts[key] += 1
        fault = self.faults(body, self.attempts[key])
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        if self._first_request is None:
            self._first_request = time.perf_counter()
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            response = await self._respond(request, body, fault)
            response.headers.update(quota_headers)
            return response
        finally:
            self.in_flight -= 1
            self._last_reply = time.perf_counter()

    async def _respond(self, request: web.Request, body: dict[str, Any], fault: str | None) -> web.StreamResponse:
        if fault == "429":
            return web.json_response({"error": {"message": "rate limited"}}, status=429, headers={"Retry-After": str(self.retry_after)})
        if fault in ("500", "400"):
            return web.json_response({"error": {"message": f"fake {fault}"}}, status=int(fault))
        if fault == "slow":
            await asyncio.sleep(self.slow_seconds)
        if fault == "drop":
            request.transport.close()
            return web.Response(status=500)
        if fault == "garbage_body":
            return web.Response(text="<html>upstream proxy error</html>", status=200, content_type="text/html")
        content = self.responder(body)
        finish = {"truncated": "length", "content_filter": "content_filter"}.get(fault or "", "stop")
        if fault == "invalid_json":
            content = content[: max(1, len(content) // 2)]
        if fault == "truncated":
            content = content[: max(1, len(content) // 2)]
        return web.json_response(completion(body.get("model", "fake"), content, finish))


def completion(model: str, content: str, finish_reason: str = "stop") -> dict[str, Any]:
    """A Chat Completions response body."""
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 11, "completion_tokens": max(1, len(content) // 4), "total_tokens": 11 + max(1, len(content) // 4)},
    }


def schema_value(schema: dict[str, Any], seed: str, path: str = "") -> Any:
    """A small value that satisfies a JSON schema (distinct strings, the first enum value, minimal arrays)."""
    kind = schema.get("type")
    if "enum" in schema:
        return schema["enum"][0]
    if kind == "object":
        return {k: schema_value(v, seed, f"{path}.{k}") for k, v in schema.get("properties", {}).items()}
    if kind == "array":
        n = max(schema.get("minItems", 0), min(2, schema.get("maxItems", 2)))
        return [schema_value(schema["items"], seed, f"{path}[{k}]") for k in range(n)]
    if kind in ("integer", "number"):
        return 0
    if kind == "boolean":
        return True
    return f"{path.strip('.')} {zlib.crc32(f'{seed}|{path}'.encode()) % 10**8}"


def schema_json(body: dict[str, Any]) -> str:
    """A responder that answers any request with a value valid for its ``json_schema`` response format."""
    schema = body.get("response_format", {}).get("json_schema", {}).get("schema", {"type": "object"})
    return json.dumps(schema_value(schema, json.dumps(body.get("messages"), sort_keys=True)))


def echo_json(body: dict[str, Any]) -> str:
    """A responder that answers ``{"echo": <last user message>}``."""
    return json.dumps({"echo": last_user_message(body)})


def main(argv: list[str] | None = None) -> None:
    """``python -m comvint.llm.fake [--port P] [--latency S]``: serve echo replies until interrupted."""
    import argparse

    parser = argparse.ArgumentParser(description="A fake OpenAI-compatible endpoint answering {\"echo\": <last user message>}.")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each reply")
    args = parser.parse_args(argv)
    with FakeOpenAI(echo_json, latency=args.latency) as server:
        print(json.dumps({"base_url": server.base_url}), flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
