"""RunStageFn: the one DoFn every LLM stage runs on, and the RunStage composite."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils.windowed_value import WindowedValue

from beam_pipeline.io import FileSystemsStore
from comvint import stats as run_stats
from comvint.llm.cache import ResponseCache
from comvint.llm.client import Backend, OfflineBackend, OpenAIBackend
from comvint.llm.config import LLMConfig
from comvint.llm.retry import UnusableReply
from comvint.llm.runner import START_IN_FLIGHT, StageRunner
from comvint.llm.throttle import shared_throttle
from comvint.stages.base import FAILED, OK, REJECTED, SKIPPED, ParseError, Stage, handle_outcomes

_LOGGER = logging.getLogger(__name__)
USAGE = "usage"
API_KEY_ENV = "OPENAI_API_KEY"
BACKLOG_FACTOR = 2  # calls queued per in-flight slot: a freed slot is refilled without waiting for the next element


class StageResult(NamedTuple):
    ok: beam.PCollection
    rejected: beam.PCollection
    failed: beam.PCollection
    usage: beam.PCollection
    skipped: beam.PCollection


def api_key_from_env() -> str:
    """The API key, read from the worker's environment only (never an option)."""
    key = os.environ.get(API_KEY_ENV)
    if not key:
        raise RuntimeError(f"--llm openai needs {API_KEY_ENV} in the environment of every worker, or --llm_api_key_secret")
    return key


def read_gcp_secret(version_name: str) -> str:
    """A Google Secret Manager secret version's value (Beam's GcpSecret; credentials are the worker's own)."""
    from apache_beam.utils.secret import GcpSecret

    return GcpSecret(version_name).get_secret_bytes().decode("utf-8").strip()


def api_key(config: LLMConfig, read_secret: Callable[[str], str] = read_gcp_secret) -> str:
    """The key for ``--llm openai``: from the secret store when ``--llm_api_key_secret`` names a version, else
    from ``OPENAI_API_KEY``. Read in each worker's ``setup()``; it never becomes an option or reaches a log."""
    if config.api_key_secret:
        key = read_secret(config.api_key_secret)
        if not key:
            raise RuntimeError(f"the secret {config.api_key_secret} is empty")
        return key
    return api_key_from_env()


class RunStageFn(beam.DoFn):
    """item -> records tagged ok | rejected | failed, plus one usage dict per bundle and window.

    Owns one event loop, client and cache per worker (created in ``setup``). The
    calls run in a window that rolls across the elements of a bundle: ``process``
    queues an item's calls and runs the loop only while more than
    ``BACKLOG_FACTOR x concurrency`` calls wait, so a freed slot is refilled at
    once and only the end of a bundle waits for its slowest call. Each record
    keeps its input's window and timestamp.
    """

    PROGRESS_EVERY_S = 10.0

    def __init__(self, stage: Stage, config: LLMConfig, backend: Callable[[], Backend] | None = None,
                 read_secret: Callable[[str], str] = read_gcp_secret) -> None:
        self._stage, self._config, self._backend = stage, config, backend  # backend: a factory, called in setup()
        self._read_secret = read_secret
        self._backlog = config.concurrency * BACKLOG_FACTOR
        name = stage.name
        self._counters = {k: Metrics.counter(f"comvint.{name}", k) for k in ("requests", "cache_hits", "failures", "emitted", "rejected", "skipped")}
        self._prompt_tokens = Metrics.counter(f"comvint.{name}", "prompt_tokens")
        self._completion_tokens = Metrics.counter(f"comvint.{name}", "completion_tokens")
        self._latency = Metrics.distribution(f"comvint.{name}", "latency_ms")

    def setup(self) -> None:
        self._loop, self._pending = asyncio.new_event_loop(), {}
        self._progress: dict[str, Any] = {}
        self._logged_at = time.monotonic()
        cache = ResponseCache(FileSystemsStore(self._config.cache_dir)) if self._config.cache_dir else None
        self._runner = self._loop.run_until_complete(self._make_runner(cache))

    async def _make_runner(self, cache: ResponseCache | None) -> StageRunner:
        config = self._config
        if self._backend is not None:
            backend = self._backend()
        elif config.backend == "openai":
            backend = OpenAIBackend(config, api_key(config, self._read_secret))
            _LOGGER.info("Stage %s: model %s at %s", self._stage.name, config.model_for(self._stage.name), config.base_url)
        else:
            backend, cache = OfflineBackend(), None
        # One throttle per worker process and endpoint: a refusal slows every stage of the worker.
        throttle = shared_throttle(f"{config.backend}|{config.base_url}", min(START_IN_FLIGHT, config.concurrency), config.concurrency,
                                   config.rpm, config.tpm)
        return StageRunner(config, backend, cache, throttle)

    def _check(self, item: Any):
        """A reply the stage cannot use for this item (its ``handle`` raises ParseError) is worth another sample."""
        stage = self._stage

        def check(call: Any, reply: dict[str, Any]) -> None:
            try:
                list(stage.handle(item, [reply]))
            except ParseError as err:
                raise UnusableReply(err.reason, err.detail) from None

        return check

    def start_bundle(self) -> None:
        self._queued, self._cpu_ms = 0, 0.0
        self._usage: dict[Any, dict[str, Any]] = {}  # window -> usage of the calls of its items

    def process(self, item: Any, window=beam.DoFn.WindowParam, timestamp=beam.DoFn.TimestampParam) -> Iterator[Any]:
        calls = self._stage.calls(item)
        check = self._check(item) if len(calls) == 1 else None
        self._pending[self._loop.create_task(self._runner.run(calls, check))] = (item, len(calls), window, timestamp)
        self._queued += len(calls)
        while self._queued > self._backlog:
            yield from self._collect(asyncio.FIRST_COMPLETED)

    def finish_bundle(self) -> Iterator[Any]:
        while self._pending:
            yield from self._collect(asyncio.ALL_COMPLETED)
        for k, (window, usage) in enumerate(self._usage.items()):
            usage = {**usage, "client_cpu_ms": self._cpu_ms if k == 0 else 0.0}  # the bundle's CPU, counted once
            self._record_usage(usage)
            yield beam.pvalue.TaggedOutput(USAGE, WindowedValue({self._stage.name: usage}, window.max_timestamp(), (window,)))

    def _collect(self, until: str) -> Iterator[Any]:
        """Run the loop until one (or every) queued item is done; emit the done items' records in queue order."""
        cpu = time.thread_time()  # the event loop runs on this thread: the client's own CPU
        self._loop.run_until_complete(asyncio.wait(self._pending, return_when=until))
        self._cpu_ms += (time.thread_time() - cpu) * 1000
        for task in [t for t in self._pending if t.done()]:
            item, n_calls, window, timestamp = self._pending.pop(task)
            self._queued -= n_calls
            outcomes = task.result()  # an error no outcome describes (a bug) fails the bundle
            for outcome in outcomes:
                self._usage[window] = run_stats.add_usage(self._usage.get(window, {}), outcome.usage)
                self._progress = run_stats.add_usage(self._progress, outcome.usage)
            self._log_progress()
            for tag, record in handle_outcomes(self._stage, item, outcomes):
                self._count(tag)
                value = WindowedValue(record, timestamp, (window,))
                yield value if tag == OK else beam.pvalue.TaggedOutput(tag, value)

    def _log_progress(self) -> None:
        """Every ~10 s: what this stage of this worker has done, so a person can follow a long run."""
        now = time.monotonic()
        if now - self._logged_at < self.PROGRESS_EVERY_S:
            return
        self._logged_at, p = now, self._progress
        _LOGGER.info(
            "Stage %s: %d calls done, %d requests in flight on this worker (limit %d), %d cache hits, %d refusals, "
            "%d retries, %d tokens, estimated cost $%.2f", self._stage.name, p.get("calls", 0), self._runner.throttle.in_flight,
            int(self._runner.throttle.limit), p.get("cache_hits", 0), p.get("retries", {}).get("rate_limited", 0),
            sum(p.get("retries", {}).values()), p.get("prompt_tokens", 0) + p.get("completion_tokens", 0), p.get("cost", 0.0))

    def _count(self, tag: str) -> None:
        self._counters[{OK: "emitted", REJECTED: "rejected", FAILED: "failures", SKIPPED: "skipped"}[tag]].inc()

    def _record_usage(self, usage: dict[str, Any]) -> None:
        self._counters["requests"].inc(usage.get("requests", 0))
        self._counters["cache_hits"].inc(usage.get("cache_hits", 0))
        self._prompt_tokens.inc(usage.get("prompt_tokens", 0))
        self._completion_tokens.inc(usage.get("completion_tokens", 0))
        if usage.get("requests"):
            self._latency.update(int(usage.get("latency_ms", 0) / usage["requests"]))

    def teardown(self) -> None:
        loop = getattr(self, "_loop", None)
        if loop is not None:
            if self._pending:  # left by a failed bundle: its records are the retried bundle's
                for task in self._pending:
                    task.cancel()
                loop.run_until_complete(asyncio.wait(self._pending))
            if hasattr(self, "_runner"):
                loop.run_until_complete(self._runner.backend.close())
            loop.close()


class RunStage(beam.PTransform):
    """items -> StageResult, via Reshuffle and RunStageFn."""

    def __init__(self, stage: Stage, config: LLMConfig, reshuffle: bool = True, backend: Callable[[], Backend] | None = None) -> None:
        super().__init__()
        self._stage, self._config, self._reshuffle, self._backend = stage, config, reshuffle, backend

    def expand(self, items) -> StageResult:
        if self._reshuffle:
            items = items | "Spread" >> beam.Reshuffle()
        results = items | "Call" >> beam.ParDo(RunStageFn(self._stage, self._config, self._backend)).with_outputs(REJECTED, FAILED, USAGE, SKIPPED, main=OK)
        return StageResult(results[OK], results[REJECTED], results[FAILED], results[USAGE], results[SKIPPED])
