"""A fake OpenAI-compatible Chat Completions server on 127.0.0.1, with fault injection.

Used by the tests and benchmarks (and handy to try an installation without an
endpoint). It runs in a background thread with its own event loop:

    with FakeOpenAI(responder=lambda body: '{"ok": true}') as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="x")

``faults(body, attempt)`` may return one of :data:`FAULTS` for a request
(``attempt`` counts requests with the same last user message, from 1).

It also serves the Batch API (``/v1/files``, ``/v1/batches``): a batch moves one status per poll
(validating, in_progress, finalizing, then its end) and writes its output lines in an order that is
not the input's. ``batch_hold`` (an Event) keeps every batch in progress until it is set;
``batch_faults(body, attempt)`` may put a line in the error file (``"500"``, ``"429"``, ``"400"``) or
leave it out (``"missing"``); ``batch_end(n)`` chooses how the n-th batch ends (``completed``,
``expired``: only its first half is answered, ``failed``).

Pictures: every ``image_url`` part must be a ``data:`` URL that decodes as an image whose shape matches the
"Image size: W x H pixels" the request states (a 400 otherwise, as a real endpoint refuses a broken image);
its tokens (gpt-4o's formula) are counted in ``prompt_tokens``, and a responder can look at the pictures
(:func:`pictures_of`), so a test can make the judge's verdict depend on what the image shows.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import io
import json
import random
import re
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

from aiohttp import web
from PIL import Image

from comvint.images import image_tokens

FAULTS = ("429", "500", "400", "slow", "drop", "invalid_json", "truncated", "content_filter", "garbage_body")
BATCH_STEPS = ("validating", "in_progress", "finalizing")
QUOTA_WINDOW_S = 60.0
Responder = Callable[[dict[str, Any]], str]
Faults = Callable[[dict[str, Any], int], "str | None"]


def last_user_message(body: dict[str, Any]) -> str:
    """The text of the last user turn (its text parts, when it carries a picture)."""
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    if not users:
        return ""
    content = users[-1]["content"]
    return (
        "".join(p.get("text", "") for p in content if p.get("type") == "text")
        if isinstance(content, list)
        else str(content)
    )


_STATED = re.compile(r"Image size: (\d+) x (\d+) pixels")


def pictures_of(body: dict[str, Any]) -> list[tuple[Image.Image, str]]:
    """The decoded pictures of a request with their detail; ValueError for one that is not an image of the stated
    shape."""
    out = []
    for message in body.get("messages", []):
        content = message.get("content")
        for part in content if isinstance(content, list) else []:
            if part.get("type") != "image_url":
                continue
            url, detail = part["image_url"]["url"], part["image_url"].get("detail", "auto")
            if not url.startswith("data:image/"):
                raise ValueError("only data: URLs are served here")
            try:
                image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1], validate=True)))
                image.load()
            except Exception as err:  # noqa: BLE001 - anything undecodable is the request's fault
                raise ValueError(f"invalid image: {err}") from None
            stated = _STATED.search(last_user_message(body))
            if stated:
                w, h = int(stated.group(1)), int(stated.group(2))
                if (
                    image.width > w
                    or image.height > h
                    or abs(image.width / image.height - w / h) > 0.02 * (w / h) + 1 / image.height
                ):
                    raise ValueError(f"picture {image.width}x{image.height} does not match the stated {w}x{h}")
            out.append((image, detail))
    return out


def prompt_tokens_of(body: dict[str, Any]) -> int:
    """What the fake bills for a prompt: 11 tokens of text, and each picture by gpt-4o's formula."""
    return 11 + sum(image_tokens("gpt-4o", image.width, image.height, detail) for image, detail in pictures_of(body))


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
        quota_kind: str = "window",
        batch_hold: threading.Event | None = None,
        batch_faults: Faults | None = None,
        batch_end: Callable[[int], str] | None = None,
        port: int = 0,
    ) -> None:
        self.responder, self.faults = responder, faults or (lambda body, attempt: None)
        self.latency, self.slow_seconds, self.retry_after = latency, slow_seconds, retry_after
        self.quota_rpm, self.quota_kind = quota_rpm, quota_kind
        self._bucket, self._bucket_at = (
            quota_rpm / 60,
            time.monotonic(),
        )  # "bucket": one second's worth, refilled evenly
        self.batch_hold, self.batch_faults = batch_hold, batch_faults or (lambda body, attempt: None)
        self.batch_end = batch_end or (lambda n: "completed")
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.batch_lines: list[list[str]] = []  # the custom_ids of each batch created, in order
        self.batch_polled = threading.Event()  # set at the first poll of any batch (its job has recorded it by then)
        self.line_attempts: collections.Counter[str] = collections.Counter()
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
        self.port = port

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
        app = web.Application(client_max_size=1 << 30)  # batch files reach hundreds of MB
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_post("/v1/files", self._upload)
        app.router.add_get("/v1/files/{id}/content", self._file_content)
        app.router.add_post("/v1/batches", self._create_batch)
        app.router.add_get("/v1/batches", self._list_batches)
        app.router.add_get("/v1/batches/{id}", self._get_batch)
        app.router.add_post("/v1/batches/{id}/cancel", self._cancel_batch)
        app.router.add_get("/stats", self._stats)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/stats/reset", self._reset)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, backlog=1024)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    async def _stats(self, request: web.Request) -> web.StreamResponse:
        """Counters, and the span from the first request to the last reply since the last reset."""
        span = self._last_reply - self._first_request if self._first_request is not None else 0.0
        return web.json_response(
            {
                "requests": len(self.requests),
                "max_in_flight": self.max_in_flight,
                "span_s": round(span, 4),
                "accepted": len(self.accepted),
                "refused": self.refused,
                "accepted_at": [round(t, 4) for t in self.accepted],
            }
        )

    async def _reset(self, request: web.Request) -> web.StreamResponse:
        self._first_request, self._last_reply, self.max_in_flight = None, 0.0, 0
        return await self._stats(request)

    def _quota(self) -> tuple[bool, dict[str, str]]:
        """With ``quota_rpm``: whether this request fits the budget, and OpenAI's rate-limit headers. ``quota_kind``
        "window": at most ``quota_rpm`` in any 60 s; "bucket": the per-minute limit enforced per second, as a
        token bucket of one second's worth (``quota_rpm / 60``) refilled evenly."""
        if not self.quota_rpm:
            return True, {}
        if self.quota_kind == "bucket":
            return self._bucket_quota()
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
        headers = {
            "x-ratelimit-limit-requests": str(self.quota_rpm),
            "x-ratelimit-remaining-requests": str(max(0, self.quota_rpm - len(self._window))),
            "x-ratelimit-reset-requests": f"{max(reset, 0.001):.3f}s",
        }
        if not allowed:
            headers |= {"retry-after-ms": str(int(reset * 1000) + 1), "retry-after": str(int(reset) + 1)}
        return allowed, headers

    def _bucket_quota(self) -> tuple[bool, dict[str, str]]:
        now, rate = time.monotonic(), self.quota_rpm / 60
        self._bucket = min(rate, self._bucket + (now - self._bucket_at) * rate)
        self._bucket_at = now
        allowed = self._bucket >= 1
        if allowed:
            self._bucket -= 1
            self.accepted.append(time.perf_counter())
        else:
            self.refused += 1
        reset = max(0.0, 1 - self._bucket) / rate
        headers = {
            "x-ratelimit-limit-requests": str(self.quota_rpm),
            "x-ratelimit-remaining-requests": str(int(self._bucket)),  # what the bucket holds now
            "x-ratelimit-reset-requests": f"{max(reset, 0.001):.3f}s",
        }
        if not allowed:
            headers |= {"retry-after-ms": str(int(reset * 1000) + 1), "retry-after": str(int(reset) + 1)}
        return allowed, headers

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.authorizations.add(request.headers.get("Authorization", ""))
        body = await request.json()
        allowed, quota_headers = self._quota()
        if not allowed:
            return web.json_response(
                {"error": {"message": "Rate limit reached for requests"}}, status=429, headers=quota_headers
            )
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
            return web.json_response(
                {"error": {"message": "rate limited"}}, status=429, headers={"Retry-After": str(self.retry_after)}
            )
        if fault in ("500", "400"):
            return web.json_response({"error": {"message": f"fake {fault}"}}, status=int(fault))
        if fault == "slow":
            await asyncio.sleep(self.slow_seconds)
        if fault == "drop":
            request.transport.close()
            return web.Response(status=500)
        if fault == "garbage_body":
            return web.Response(text="<html>upstream proxy error</html>", status=200, content_type="text/html")
        try:
            prompt_tokens = prompt_tokens_of(body)
        except ValueError as err:
            return web.json_response({"error": {"message": str(err), "type": "invalid_request_error"}}, status=400)
        content = self.responder(body)
        finish = {"truncated": "length", "content_filter": "content_filter"}.get(fault or "", "stop")
        if fault == "invalid_json":
            content = content[: max(1, len(content) // 2)]
        if fault == "truncated":
            content = content[: max(1, len(content) // 2)]
        return web.json_response(completion(body.get("model", "fake"), content, finish, prompt_tokens))

    async def _models(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model", "owned_by": "comvint"}]})

    def _new_file(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        file = {
            "id": f"file-{len(self.files) + 1}",
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }
        self.files[file["id"]] = {**file, "data": data}
        return file

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        upload = form["file"]
        return web.json_response(self._new_file(upload.file.read(), upload.filename, str(form["purpose"])))

    async def _file_content(self, request: web.Request) -> web.StreamResponse:
        file = self.files.get(request.match_info["id"])
        if file is None:
            return web.json_response({"error": {"message": "no such file"}}, status=404)
        return web.Response(body=file["data"], content_type="application/octet-stream")

    async def _create_batch(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        file = self.files.get(body.get("input_file_id"))
        if file is None:
            return web.json_response({"error": {"message": "no such input file"}}, status=400)
        lines = [json.loads(x) for x in file["data"].decode("utf-8").splitlines() if x.strip()]
        n = len(self.batches)
        batch = {
            "id": f"batch_{n + 1}",
            "object": "batch",
            "endpoint": body["endpoint"],
            "input_file_id": file["id"],
            "completion_window": body["completion_window"],
            "status": "validating",
            "created_at": int(time.time()),
            "metadata": body.get("metadata"),
            "output_file_id": None,
            "error_file_id": None,
            "errors": None,
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
        }
        self.batches[batch["id"]] = {**batch, "_lines": lines, "_n": n}
        self.batch_lines.append([line["custom_id"] for line in lines])
        return web.json_response(batch)

    @staticmethod
    def _public(batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in batch.items() if not k.startswith("_")}

    async def _list_batches(self, request: web.Request) -> web.StreamResponse:
        ids = list(reversed(self.batches))  # newest first
        after = request.query.get("after")
        start = ids.index(after) + 1 if after in ids else 0
        limit = int(request.query.get("limit", 20))
        page = ids[start : start + limit]
        return web.json_response(
            {
                "object": "list",
                "data": [self._public(self.batches[i]) for i in page],
                "first_id": page[0] if page else None,
                "last_id": page[-1] if page else None,
                "has_more": start + limit < len(ids),
            }
        )

    async def _get_batch(self, request: web.Request) -> web.StreamResponse:
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return web.json_response({"error": {"message": "no such batch"}}, status=404)
        self.batch_polled.set()
        self._advance(batch)
        return web.json_response(self._public(batch))

    async def _cancel_batch(self, request: web.Request) -> web.StreamResponse:
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return web.json_response({"error": {"message": "no such batch"}}, status=404)
        if batch["status"] in BATCH_STEPS:
            batch["status"] = "cancelling"
        return web.json_response(self._public(batch))

    def _advance(self, batch: dict[str, Any]) -> None:
        """One step per poll: validating -> in_progress -> finalizing -> its end (held in progress by
        ``batch_hold``)."""
        status = batch["status"]
        if status == "cancelling":
            self._finish(batch, "cancelled", 0)
        elif status == "in_progress" and self.batch_hold is not None and not self.batch_hold.is_set():
            return
        elif status in BATCH_STEPS[:-1]:
            batch["status"] = BATCH_STEPS[BATCH_STEPS.index(status) + 1]
        elif status == "finalizing":
            end = self.batch_end(batch["_n"])
            lines = batch["_lines"]
            self._finish(batch, end, len(lines) if end == "completed" else len(lines) // 2 if end == "expired" else 0)

    def _finish(self, batch: dict[str, Any], status: str, answered: int) -> None:
        """End a batch: its first ``answered`` lines are processed, the rest are left unanswered."""
        out, errors = [], []
        for k, line in enumerate(batch["_lines"]):
            custom_id = line["custom_id"]
            if k >= answered:
                if status == "expired":
                    errors.append(
                        {
                            "id": f"req_{k}",
                            "custom_id": custom_id,
                            "response": None,
                            "error": {
                                "code": "batch_expired",
                                "message": "This request could not be executed before the completion window expired.",
                            },
                        }
                    )
                continue
            self.line_attempts[custom_id] += 1
            fault = self.batch_faults(line["body"], self.line_attempts[custom_id])
            if fault == "missing":
                continue
            if fault in ("500", "429", "400"):
                errors.append(
                    {
                        "id": f"req_{k}",
                        "custom_id": custom_id,
                        "error": None,
                        "response": {
                            "status_code": int(fault),
                            "request_id": f"r{k}",
                            "body": {"error": {"message": f"fake {fault}"}},
                        },
                    }
                )
                continue
            content = self.responder(line["body"])
            out.append(
                {
                    "id": f"req_{k}",
                    "custom_id": custom_id,
                    "error": None,
                    "response": {
                        "status_code": 200,
                        "request_id": f"r{k}",
                        "body": completion(
                            line["body"].get("model", "fake"), content, prompt_tokens=prompt_tokens_of(line["body"])
                        ),
                    },
                }
            )
        random.Random(batch["_n"]).shuffle(out)  # the output's order is not the input's
        if out:
            batch["output_file_id"] = self._new_file(_jsonl(out), "output.jsonl", "batch_output")["id"]
        if errors:
            batch["error_file_id"] = self._new_file(_jsonl(errors), "errors.jsonl", "batch_output")["id"]
        if status == "failed":
            batch["errors"] = {
                "object": "list",
                "data": [{"code": "invalid_request", "message": "fake validation failure"}],
            }
        batch["status"] = status
        batch["request_counts"] = {"total": len(batch["_lines"]), "completed": len(out), "failed": len(errors)}


def _jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode("utf-8")


def completion(model: str, content: str, finish_reason: str = "stop", prompt_tokens: int = 11) -> dict[str, Any]:
    """A Chat Completions response body."""
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": max(1, len(content) // 4),
            "total_tokens": prompt_tokens + max(1, len(content) // 4),
        },
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
    """``python -m comvint.testing.fake_openai [--port P] [--reply echo|schema] [--latency S] [--pid_file F]``: serve
    until stopped."""
    import argparse
    import os
    import signal

    parser = argparse.ArgumentParser(description="A fake OpenAI-compatible endpoint on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free one)")
    parser.add_argument(
        "--reply",
        choices=("echo", "schema"),
        default="echo",
        help='echo: {"echo": <last user message>}; schema: a value valid for the request\'s json_schema',
    )
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each reply")
    parser.add_argument("--pid_file", default=None, help="write this process's id here once serving")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with FakeOpenAI(
        schema_json if args.reply == "schema" else echo_json, latency=args.latency, port=args.port
    ) as server:
        if args.pid_file:
            with open(args.pid_file, "w") as handle:
                handle.write(str(os.getpid()))
        print(json.dumps({"base_url": server.base_url}), flush=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
