"""The Batch API as a backend: calls queue into batch files that are uploaded, submitted, polled and read back.

``BatchBackend.complete`` does not send anything: it queues the call's request as one line of a
batch file (``custom_id`` = the call's cache key) and waits. The stage driver calls :meth:`flush`
once every open call of its bundle is queued; ``flush`` packs the lines into files of at most
``--llm_batch_max_requests`` lines and ``--llm_batch_max_mb`` (one model per file), uploads them
(``POST /v1/files``), writes the ledger, creates the batches (``POST /v1/batches``), polls them
(``GET /v1/batches/{id}``) until they end, and reads the output and error files. Each line's reply or
error resolves its call, so the runner parses, validates, caches, retries (into the next batch) and
dead-letters it exactly as an online reply.

The ledger (``<cache_dir>/batches/<input file id>.json``) is written before a batch is created and
updated as it moves; a rerun with the same flags finds the lines it needs in a batch still in flight
and waits for that batch instead of submitting them again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from comvint.llm.client import Reply, reply_from_json, request_body
from comvint.llm.config import LLMConfig
from comvint.llm.retry import BatchLineError, classify
from comvint.llm.runner import Call, call_key

_LOGGER = logging.getLogger(__name__)
ENDPOINT = "/v1/chat/completions"
COMPLETION_WINDOW = "24h"
TERMINAL = ("completed", "failed", "expired", "cancelled")
COLLECTED = "collected"  # the ledger's mark for a batch whose lines were all read back
# Why a line a batch did not answer failed, by the batch's final status, and whether the next batch may retry it.
MISSING = {
    "completed": ("batch_missing_line", True),
    "expired": ("batch_expired", True),
    "failed": ("batch_failed", False),
    "cancelled": ("batch_cancelled", False),
}


class LedgerStore(Protocol):
    """Named text files (``<cache_dir>/batches/`` on any file system)."""

    def names(self) -> list[str]: ...

    def read(self, name: str) -> str | None: ...

    def write(self, name: str, text: str) -> None: ...


@dataclasses.dataclass
class LedgerEntry:
    """One batch file this job uploaded: what it holds and how far its batch got."""

    endpoint: str  # the base URL the file was uploaded to (file and batch ids are only unique there)
    stage: str
    model: str
    input_file_id: str
    custom_ids: list[str]
    batch_id: str | None = None
    status: str = "uploaded"  # uploaded, then the batch's own status, then ``collected``
    submitted_at: float = 0.0

    @property
    def resumable(self) -> bool:
        """Whether a rerun waits for this batch rather than submitting its lines again: anything but a batch
        already read back, or one that was cancelled or failed (a rerun then submits its lines afresh)."""
        return self.status not in (COLLECTED, "cancelling", "cancelled", "failed")


class Ledger:
    """Every batch a job submitted, as one JSON file per input file."""

    def __init__(self, store: LedgerStore) -> None:
        self.store = store

    def save(self, entry: LedgerEntry) -> None:
        name = f"{hashlib.sha256(entry.endpoint.encode()).hexdigest()[:12]}-{entry.input_file_id}.json"
        self.store.write(name, json.dumps(dataclasses.asdict(entry), sort_keys=True))

    def entries(self) -> list[LedgerEntry]:
        found = []
        for name in self.store.names():
            text = self.store.read(name)
            if text:
                found.append(LedgerEntry(**json.loads(text)))
        return found


@dataclasses.dataclass
class Line:
    """One request waiting for a batch: every call with the same key waits on the same line."""

    custom_id: str
    model: str
    body: dict[str, Any]
    futures: list[asyncio.Future] = dataclasses.field(default_factory=list)

    def encoded(self) -> bytes:
        return (
            json.dumps(
                {"custom_id": self.custom_id, "method": "POST", "url": ENDPOINT, "body": self.body},
                separators=(",", ":"),
                ensure_ascii=False,
            ).encode("utf-8")
            + b"\n"
        )


def plan_files(lines: Iterable[Line], max_requests: int, max_bytes: int) -> list[list[Line]]:
    """Lines -> batch files: one model per file, at most ``max_requests`` lines and ``max_bytes`` each."""
    files: list[list[Line]] = []
    for model in sorted({line.model for line in lines}):
        current, size = [], 0
        for line in (x for x in lines if x.model == model):
            n = len(line.encoded())
            if current and (len(current) >= max_requests or size + n > max_bytes):
                files.append(current)
                current, size = [], 0
            current.append(line)
            size += n
        if current:
            files.append(current)
    return files


def line_result(record: dict[str, Any], model: str) -> Reply | BatchLineError:
    """One line of an output or error file -> the call's reply, or why it has none."""
    response, error = record.get("response") or {}, record.get("error")
    status = response.get("status_code")
    if status == 200 and not error:
        return reply_from_json(response.get("body") or {}, model)
    if status:
        body_error = (response.get("body") or {}).get("error") or {}
        retryable = status in (408, 409, 429) or status >= 500
        return BatchLineError(f"batch_http_{status}", str(body_error.get("message") or body_error)[:300], retryable)
    code = str((error or {}).get("code") or "error")
    cause = code if code.startswith("batch_") else f"batch_{code}"
    return BatchLineError(cause, str((error or {}).get("message") or "")[:300], True)


def parse_results(text: str, model: str) -> dict[str, Reply | BatchLineError]:
    """An output or error file's lines by ``custom_id`` (their order is not the input's)."""
    results = {}
    for raw in text.splitlines():
        if raw.strip():
            record = json.loads(raw)
            results[record["custom_id"]] = line_result(record, model)
    return results


def missing_line(status: str, errors: Any) -> BatchLineError:
    """The error of a line a batch ended without answering."""
    cause, retryable = MISSING.get(status, ("batch_missing_line", True))
    return BatchLineError(cause, f"the batch ended {status} without this line {errors or ''}".strip()[:300], retryable)


class BatchBackend:
    """Calls answered through batch files (see the module docstring). Create it inside its event loop."""

    name = "openai"
    batch = True

    def __init__(
        self,
        config: LLMConfig,
        api_key: str,
        ledger: Ledger,
        client: Any = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        import openai

        self._config, self._ledger, self._sleep = config, ledger, sleep
        self._endpoint = endpoint_of(config)
        self._client = client or openai.AsyncOpenAI(
            api_key=api_key,
            base_url=config.base_url,
            max_retries=config.max_retries,
            timeout=max(config.timeout, 600.0),
        )
        self._queue: dict[str, Line] = {}
        self.waiting = 0  # calls queued for the next flush
        self._resumable: dict[str, LedgerEntry] | None = None  # custom_id -> a batch in flight from an earlier run
        self.batches_submitted = self.lines_submitted = self.batches_resumed = 0

    async def complete(self, call: Any, model: str, max_tokens: int | None = None, seed: int | None = None) -> Reply:
        custom_id = call_key(self._config, call, model)
        line = self._queue.get(custom_id)
        if line is None:
            line = self._queue[custom_id] = Line(
                custom_id, model, request_body(self._config, call, model, max_tokens, seed)
            )
        future = asyncio.get_running_loop().create_future()
        line.futures.append(future)
        self.waiting += 1
        return await future

    async def flush(self, stage: str) -> None:
        """Send every queued line (resuming the batches of an earlier run that hold some) and wait for all of them."""
        queue, self._queue, self.waiting = self._queue, {}, 0
        if self._resumable is None:
            self._resumable = {
                cid: e
                for e in self._ledger.entries()
                if e.endpoint == self._endpoint and e.stage == stage and e.resumable
                for cid in e.custom_ids
            }
        resumed: dict[str, tuple[LedgerEntry, list[Line]]] = {}
        fresh = []
        for line in queue.values():
            entry = self._resumable.pop(line.custom_id, None)
            if entry is None:
                fresh.append(line)
            else:
                resumed.setdefault(entry.input_file_id, (entry, []))[1].append(line)
        files = plan_files(fresh, self._config.batch_max_requests, int(self._config.batch_max_mb * (1 << 20)))
        jobs = [self._resume(entry, lines) for entry, lines in resumed.values()] + [
            self._submit(stage, lines) for lines in files
        ]
        await asyncio.gather(*jobs)

    async def _submit(self, stage: str, lines: list[Line]) -> None:
        try:
            upload = await self._client.files.create(
                file=(f"comvint-{stage}.jsonl", b"".join(x.encoded() for x in lines)), purpose="batch"
            )
            entry = LedgerEntry(
                self._endpoint, stage, lines[0].model, upload.id, [x.custom_id for x in lines], submitted_at=time.time()
            )
            self._ledger.save(
                entry
            )  # before the batch exists: a rerun finds the file and never uploads its lines again
            await self._create(entry)
        except Exception as exc:  # noqa: BLE001 - every line of the file fails with the reason; the runner retries it
            _resolve(lines, {}, _as_line_error(exc, "batch_submit_error"))
            return
        self.batches_submitted += 1
        self.lines_submitted += len(lines)
        await self._await(entry, lines)

    async def _create(self, entry: LedgerEntry) -> None:
        batch = await self._client.batches.create(
            input_file_id=entry.input_file_id,
            endpoint=ENDPOINT,
            completion_window=COMPLETION_WINDOW,
            metadata={"comvint_stage": entry.stage},
        )
        entry.batch_id, entry.status = batch.id, batch.status
        self._ledger.save(entry)
        _LOGGER.info(
            "Stage %s: batch %s submitted with %d lines (file %s)",
            entry.stage,
            batch.id,
            len(entry.custom_ids),
            entry.input_file_id,
        )

    async def _resume(self, entry: LedgerEntry, lines: list[Line]) -> None:
        """Wait for a batch an earlier run submitted (creating it from its uploaded file if that run died first)."""
        try:
            if entry.batch_id is None:
                found = await self._find_batch(entry.input_file_id)
                if found is None:
                    await self._create(entry)
                else:
                    entry.batch_id, entry.status = found.id, found.status
                    self._ledger.save(entry)
        except Exception as exc:  # noqa: BLE001
            _resolve(lines, {}, _as_line_error(exc, "batch_submit_error"))
            return
        self.batches_resumed += 1
        _LOGGER.info("Stage %s: resuming batch %s (%d of its lines needed)", entry.stage, entry.batch_id, len(lines))
        await self._await(entry, lines)

    async def _find_batch(self, input_file_id: str) -> Any:
        async for batch in self._client.batches.list(limit=100):
            if batch.input_file_id == input_file_id:
                return batch
        return None

    async def _await(self, entry: LedgerEntry, lines: list[Line]) -> None:
        try:
            batch = await self._poll(entry)
            results: dict[str, Reply | BatchLineError] = {}
            for file_id in (batch.output_file_id, batch.error_file_id):
                if file_id:
                    content = await self._client.files.content(file_id)
                    results |= parse_results(content.text, entry.model)
        except Exception as exc:  # noqa: BLE001
            _resolve(lines, {}, _as_line_error(exc, "batch_poll_error"))
            return
        _resolve(lines, results, missing_line(batch.status, getattr(batch, "errors", None)))
        entry.status = COLLECTED if batch.status in ("completed", "expired") else batch.status
        self._ledger.save(entry)

    async def _poll(self, entry: LedgerEntry) -> Any:
        """The batch once it has ended; every ``--llm_batch_poll_s``, backing off on errors."""
        interval, errors, status = self._config.batch_poll_s, 0, entry.status
        while True:
            try:
                batch = await self._client.batches.retrieve(entry.batch_id)
                errors, interval = 0, self._config.batch_poll_s
            except Exception as exc:
                errors += 1
                if not classify(exc)[0] or errors > self._config.max_retries:
                    raise
                interval = min(interval * 2, self._config.batch_poll_s * 16)
                await self._sleep(interval)
                continue
            if batch.status != status:
                status = entry.status = batch.status
                self._ledger.save(entry)
            counts = getattr(batch, "request_counts", None)
            _LOGGER.info(
                "Stage %s: batch %s %s (%s of %s lines done, %s failed)",
                entry.stage,
                batch.id,
                batch.status,
                getattr(counts, "completed", "?"),
                getattr(counts, "total", "?"),
                getattr(counts, "failed", "?"),
            )
            if batch.status in TERMINAL:
                return batch
            await self._sleep(interval)

    async def close(self) -> None:
        await self._client.close()


def _as_line_error(exc: BaseException, cause: str) -> BatchLineError:
    retryable, why = classify(exc)
    return BatchLineError(cause, f"{why}: {exc}"[:300], retryable)


def _resolve(lines: list[Line], results: dict[str, Reply | BatchLineError], missing: BatchLineError) -> None:
    """Each waiting call gets its line's reply, or its own copy of the line's error (an exception object raised in
    many tasks would collect every one of their tracebacks)."""
    for line in lines:
        result = results.get(line.custom_id, missing)
        for future in line.futures:
            if future.done():
                continue
            if isinstance(result, BatchLineError):
                future.set_exception(BatchLineError(result.cause, result.detail, result.retryable))
            else:
                future.set_result(result)


def endpoint_of(config: LLMConfig) -> str:
    """The endpoint a ledger entry belongs to (the SDK's default when no base URL is set)."""
    return config.base_url or "https://api.openai.com/v1"


async def cancel_outstanding(ledger: Ledger, client: Any, endpoint: str) -> list[tuple[str, str]]:
    """Ask ``endpoint`` to cancel every batch of the ledger still in flight there: ``(batch id, status)`` of each."""
    done = []
    for entry in ledger.entries():
        if entry.endpoint == endpoint and entry.batch_id and entry.status not in (*TERMINAL, COLLECTED):
            batch = await client.batches.cancel(entry.batch_id)
            entry.status = batch.status
            ledger.save(entry)
            done.append((entry.batch_id, batch.status))
    return done


async def flush_when_waiting(backend: BatchBackend, open_calls: Callable[[], int], stage: str) -> bool:
    """Let every open call run until it waits for a batch, then send the batch(es) and wait for them.
    False when no call is left waiting (every open call has its outcome)."""
    spins = 0
    while backend.waiting < open_calls():  # some call is still between batches (a cache read, a retry being queued)
        spins += 1
        await asyncio.sleep(0 if spins < 1000 else 0.001)
    if not backend.waiting:
        return False
    await backend.flush(stage)
    return True


def request_size(calls: list[Call]) -> tuple[int, int]:
    """(calls, bytes of their messages) of one item: what its lines add to a batch file."""
    return len(calls), sum(len(json.dumps(c.messages)) for c in calls)


def add_sizes(sizes: Iterable[tuple[int, int]]) -> tuple[int, int]:
    """The sum of :func:`request_size` pairs."""
    calls = size = 0
    for a, b in sizes:
        calls, size = calls + a, size + b
    return calls, size


def batch_groups(totals: tuple[int, int], config: LLMConfig, fill: float = 0.9) -> int:
    """How many batch files a stage's calls need (each filled to ``fill`` of the limits, leaving room for hashing)."""
    calls, size = totals
    return max(
        1,
        math.ceil(calls / (fill * config.batch_max_requests)),
        math.ceil(size / (fill * config.batch_max_mb * (1 << 20))),
    )
