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
from collections.abc import Callable
from typing import Any

from aiohttp import web

FAULTS = ("429", "500", "400", "slow", "drop", "invalid_json", "truncated", "content_filter")
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
    ) -> None:
        self.responder, self.faults = responder, faults or (lambda body, attempt: None)
        self.latency, self.slow_seconds, self.retry_after = latency, slow_seconds, retry_after
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
        return web.json_response({"requests": len(self.requests), "max_in_flight": self.max_in_flight, "span_s": round(span, 4)})

    async def _reset(self, request: web.Request) -> web.StreamResponse:
        self._first_request, self._last_reply, self.max_in_flight = None, 0.0, 0
        return await self._stats(request)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.authorizations.add(request.headers.get("Authorization", ""))
        body = await request.json()
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
            return await self._respond(request, body, fault)
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
