"""RunStageFn: the one DoFn every LLM stage runs on, and the RunStage composite."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_pipeline.io import FileSystemsStore
from comvint import stats as run_stats
from comvint.llm.cache import ResponseCache
from comvint.llm.client import OfflineBackend, OpenAIBackend
from comvint.llm.config import LLMConfig
from comvint.llm.runner import StageRunner
from comvint.stages.base import FAILED, OK, REJECTED, Stage, handle_outcomes

_LOGGER = logging.getLogger(__name__)
USAGE = "usage"
API_KEY_ENV = "OPENAI_API_KEY"
BATCH_FACTOR = 8  # batch = 8 x concurrency: the slots stay full, and a batch's tail is paid once per 8 waves


class StageResult(NamedTuple):
    ok: beam.PCollection
    rejected: beam.PCollection
    failed: beam.PCollection
    usage: beam.PCollection


def api_key_from_env() -> str:
    """The API key, read from the worker's environment only (never an option)."""
    key = os.environ.get(API_KEY_ENV)
    if not key:
        raise RuntimeError(f"--llm openai needs {API_KEY_ENV} in the environment of every worker")
    return key


class RunStageFn(beam.DoFn):
    """list[item] -> items/records tagged ok | rejected | failed, plus one usage dict per batch.

    Owns one event loop, client and cache per worker (created in ``setup``); the
    calls of a batch run concurrently, each ending as a record or a failure.
    """

    def __init__(self, stage: Stage, config: LLMConfig) -> None:
        self._stage, self._config = stage, config
        name = stage.name
        self._counters = {k: Metrics.counter(f"comvint.{name}", k) for k in ("requests", "cache_hits", "failures", "emitted", "rejected")}
        self._prompt_tokens = Metrics.counter(f"comvint.{name}", "prompt_tokens")
        self._completion_tokens = Metrics.counter(f"comvint.{name}", "completion_tokens")
        self._latency = Metrics.distribution(f"comvint.{name}", "latency_ms")

    def setup(self) -> None:
        self._loop = asyncio.new_event_loop()
        cache = ResponseCache(FileSystemsStore(self._config.cache_dir)) if self._config.cache_dir else None
        self._runner = self._loop.run_until_complete(self._make_runner(cache))

    async def _make_runner(self, cache: ResponseCache | None) -> StageRunner:
        if self._config.backend == "openai":
            backend = OpenAIBackend(self._config, api_key_from_env())
            _LOGGER.info("Stage %s: model %s at %s", self._stage.name, self._config.model_for(self._stage.name), self._config.base_url)
        else:
            backend, cache = OfflineBackend(), None
        return StageRunner(self._config, backend, cache)

    def process(self, batch: list[Any]) -> Iterator[Any]:
        per_item = [self._stage.calls(item) for item in batch]
        flat = [call for calls in per_item for call in calls]
        cpu = time.thread_time()  # the event loop runs on this thread: the client's own CPU
        outcomes = iter(self._loop.run_until_complete(self._runner.run(flat)))
        usage: dict[str, Any] = {"client_cpu_ms": (time.thread_time() - cpu) * 1000}
        for item, calls in zip(batch, per_item):
            mine = [next(outcomes) for _ in calls]
            for outcome in mine:
                usage = run_stats.add_usage(usage, outcome.usage)
            for tag, record in handle_outcomes(self._stage, item, mine):
                self._count(tag)
                yield record if tag == OK else beam.pvalue.TaggedOutput(tag, record)
        self._record_usage(usage)
        yield beam.pvalue.TaggedOutput(USAGE, {self._stage.name: usage})

    def _count(self, tag: str) -> None:
        self._counters[{OK: "emitted", REJECTED: "rejected", FAILED: "failures"}[tag]].inc()

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
            loop.run_until_complete(self._runner.backend.close())
            loop.close()


class RunStage(beam.PTransform):
    """items -> StageResult, via Reshuffle, BatchElements and RunStageFn."""

    def __init__(self, stage: Stage, config: LLMConfig, reshuffle: bool = True) -> None:
        super().__init__()
        self._stage, self._config, self._reshuffle = stage, config, reshuffle

    def expand(self, items) -> StageResult:
        if self._reshuffle:
            items = items | "Spread" >> beam.Reshuffle()
        # Batches of at least `concurrency` items keep every slot busy from the first batch on;
        # a batch only waits for its slowest call, so larger batches waste less at their tail.
        concurrency = self._config.concurrency
        results = (
            items
            | "Batch" >> beam.BatchElements(min_batch_size=concurrency * BATCH_FACTOR, max_batch_size=concurrency * BATCH_FACTOR)
            | "Call" >> beam.ParDo(RunStageFn(self._stage, self._config)).with_outputs(REJECTED, FAILED, USAGE, main=OK)
        )
        return StageResult(results[OK], results[REJECTED], results[FAILED], results[USAGE])
