"""RunStageFn: the one DoFn every LLM stage runs on, and the RunStage composite."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils.multi_process_shared import MultiProcessShared
from apache_beam.utils.windowed_value import WindowedValue

from beam_pipeline.pictures import Pictures
from beam_pipeline.stores import FileSystemsLedgerStore, FileSystemsStore
from comvint import stats as run_stats
from comvint.images import ImageError, image_tokens, picture_id, with_picture
from comvint.llm.backends import make_backend
from comvint.llm.batch import add_sizes, batch_groups, flush_when_waiting, request_size
from comvint.llm.budget import shared_budget
from comvint.llm.cache import ResponseCache
from comvint.llm.client import Backend, OfflineBackend
from comvint.llm.config import LLMConfig
from comvint.llm.redact import redact_url
from comvint.llm.retry import UnusableReply
from comvint.llm.runner import START_IN_FLIGHT, StageRunner
from comvint.llm.server import LocalServer
from comvint.llm.throttle import shared_throttle
from comvint.records import pack, stable_int, unpack
from comvint.stages.base import FAILED, OK, REJECTED, SKIPPED, ParseError, Stage, failure, handle_outcomes
from comvint.stats import unit_of

_LOGGER = logging.getLogger(__name__)
USAGE = "usage"
BACKLOG_FACTOR = 2  # calls queued per in-flight slot: a freed slot is refilled without waiting for the next element


class StageResult(NamedTuple):
    ok: beam.PCollection
    rejected: beam.PCollection
    failed: beam.PCollection
    usage: beam.PCollection
    skipped: beam.PCollection


def read_gcp_secret(version_name: str) -> str:
    """A Google Secret Manager secret version's value (Beam's GcpSecret; credentials are the worker's own)."""
    from apache_beam.utils.secret import GcpSecret

    return GcpSecret(version_name).get_secret_bytes().decode("utf-8").strip()


def shared_server(config: LLMConfig) -> MultiProcessShared:
    """The one :class:`LocalServer` of this worker machine for ``--llm_server_cmd`` (its SDK processes share it)."""
    tag = "comvint-llm-server-" + hashlib.sha256(config.server_cmd.encode()).hexdigest()[:16]
    return MultiProcessShared(
        lambda: LocalServer(config.server_cmd, config.server_startup_s), tag=tag, always_proxy=True
    )


class RunStageFn(beam.DoFn):
    """item -> records tagged ok | rejected | failed, plus one usage dict per bundle and window.

    Owns one event loop, client and cache per worker (created in ``setup``). The
    calls run in a window that rolls across the elements of a bundle: ``process``
    queues an item's calls and runs the loop only while more than
    ``BACKLOG_FACTOR x concurrency`` calls wait, so a freed slot is refilled at
    once and only the end of a bundle waits for its slowest call. Each record
    keeps its input's window and timestamp.

    In batch mode (``--llm_mode batch``) every call of the bundle is queued first; ``finish_bundle``
    then sends them as batch files and waits, again for each follow-up batch of retries.
    """

    PROGRESS_EVERY_S = 10.0

    def __init__(
        self,
        stage: Stage,
        config: LLMConfig,
        backend: Callable[[], Backend] | None = None,
        read_secret: Callable[[str], str] = read_gcp_secret,
    ) -> None:
        self._stage, self._config, self._backend = stage, config, backend  # backend: a factory, called in setup()
        self._read_secret = read_secret
        self._backlog = config.concurrency * BACKLOG_FACTOR
        name = stage.name
        self._counters = {
            k: Metrics.counter(f"comvint.{name}", k)
            for k in ("requests", "cache_hits", "failures", "emitted", "rejected", "skipped")
        }
        self._prompt_tokens = Metrics.counter(f"comvint.{name}", "prompt_tokens")
        self._completion_tokens = Metrics.counter(f"comvint.{name}", "completion_tokens")
        self._latency = Metrics.distribution(f"comvint.{name}", "latency_ms")

    def setup(self) -> None:
        self._loop, self._pending, self._issued = asyncio.new_event_loop(), {}, 0
        self._progress: dict[str, Any] = {}
        self._logged_at = time.monotonic()
        cache = ResponseCache(FileSystemsStore(self._config.cache_dir)) if self._config.cache_dir else None
        self._runner = self._loop.run_until_complete(self._make_runner(cache))
        config = self._config
        self._pictures = (
            Pictures(config.image_root, config.image_detail, config.image_max_px)
            if self._stage.name in config.image_stages
            else None
        )

    async def _make_runner(self, cache: ResponseCache | None) -> StageRunner:
        config = self._config
        endpoint = config  # where requests go; the cache key still names config.endpoint
        if config.server_cmd and self._backend is None:
            self._shared_server = shared_server(config)
            self._server = self._shared_server.acquire()
            endpoint = dataclasses.replace(config, base_url=self._server.attach(), server_cmd=None)
            _LOGGER.info(
                "Stage %s: model %s on the worker's own server at %s",
                self._stage.name,
                config.model_for(self._stage.name),
                endpoint.base_url,
            )
        if self._backend is not None:
            backend = self._backend()
        else:
            ledger = FileSystemsLedgerStore(config.cache_dir) if config.mode == "batch" else None
            backend = make_backend(config, self._read_secret, ledger, endpoint)
            where = {"batch": f"through the Batch API at {redact_url(config.base_url)}"}.get(config.mode) or (
                f"at {redact_url(config.base_url)}" if config.backend == "openai" and not config.server_cmd else None
            )
            if where:
                _LOGGER.info("Stage %s: model %s %s", self._stage.name, config.model_for(self._stage.name), where)
            if isinstance(backend, OfflineBackend):
                cache = None  # the offline engine is deterministic and cheap: nothing to cache
        # One throttle per worker process and endpoint: a refusal slows every stage of the worker.
        throttle = shared_throttle(
            f"{config.backend}|{config.base_url}",
            min(START_IN_FLIGHT, config.concurrency),
            config.concurrency,
            config.rpm,
            config.tpm,
            config.workers,
        )
        return StageRunner(config, backend, cache, throttle, budget=shared_budget(config.run_id, config.max_cost_usd))

    def _check(self, item: Any, ann: Any):
        """A reply the stage cannot use for this item (its ``handle`` raises ParseError) is worth another sample."""
        stage = self._stage

        def check(call: Any, reply: dict[str, Any]) -> None:
            try:
                list(stage.handle(item, ann, [reply]))
            except ParseError as err:
                raise UnusableReply(err.reason, err.detail) from None

        return check

    def start_bundle(self) -> None:
        self._queued, self._cpu_ms = 0, 0.0
        self._usage: dict[Any, dict[str, Any]] = {}  # window -> usage of the calls of its items
        self._batches_at_start = self._batch_counts()

    def _batch_counts(self) -> dict[str, int]:
        backend = self._runner.backend
        return {
            "batches": getattr(backend, "batches_submitted", 0),
            "batch_lines": getattr(backend, "lines_submitted", 0),
            "batches_resumed": getattr(backend, "batches_resumed", 0),
        }

    def process(
        self, pair: tuple[Any, Any], window=beam.DoFn.WindowParam, timestamp=beam.DoFn.TimestampParam
    ) -> Iterator[Any]:
        item, ann = pair
        calls = self._stage.calls(item, ann)
        if self._pictures is not None:
            try:
                calls = self._show_picture(item, calls)
            except ImageError as err:  # never a silent text-only call: the item is a dead letter
                self._count(FAILED)
                record = failure(self._stage.name, item, f"{self._stage.name}_image_missing", str(err))
                yield beam.pvalue.TaggedOutput(FAILED, WindowedValue(record, timestamp, (window,)))
                return
        check = self._check(item, ann) if len(calls) == 1 else None
        self._pending[self._loop.create_task(self._runner.run(calls, check))] = (
            item,
            ann,
            len(calls),
            window,
            timestamp,
        )
        self._queued += len(calls)
        self._issued += len(calls)
        while self._queued > self._backlog and not self._runner.batch:  # batch mode: queue the whole bundle first
            yield from self._collect(asyncio.FIRST_COMPLETED)

    def _show_picture(self, item: Any, calls: list) -> list:
        """The calls with the item's picture (read once per worker); their records will say this stage saw it."""
        config = self._config
        pic = self._pictures.get(item["image"])
        tokens = (
            0
            if config.backend == "offline"
            else image_tokens(
                config.model_for(self._stage.name), pic.width, pic.height, config.image_detail, config.image_tokens
            )
        )
        return [
            dataclasses.replace(
                call,
                messages=with_picture(call.messages, pic, config.image_detail),
                images=(*call.images, picture_id(pic, config.image_detail)),
                image_tokens=call.image_tokens + tokens,
            )
            for call in calls
        ]

    def finish_bundle(self) -> Iterator[Any]:
        if self._runner.batch:
            self._send_batches()
        while self._pending:
            yield from self._collect(asyncio.ALL_COMPLETED)
        now = self._batch_counts()
        batches = {k: now[k] - self._batches_at_start[k] for k in now if now[k] > self._batches_at_start[k]}
        for k, (window, usage) in enumerate(self._usage.items()):
            # the bundle's CPU and batches, counted once
            usage = {**usage, "client_cpu_ms": self._cpu_ms if k == 0 else 0.0, **(batches if k == 0 else {})}
            self._record_usage(usage)
            yield beam.pvalue.TaggedOutput(
                USAGE, WindowedValue({self._stage.name: usage}, window.max_timestamp(), (window,))
            )

    def _send_batches(self) -> None:
        """Flush the batch backend whenever every open call waits for it (retries make follow-up batches)."""
        runner = self._runner
        cpu = time.thread_time()
        while self._loop.run_until_complete(
            flush_when_waiting(runner.backend, lambda: self._issued - runner.finished, self._stage.name)
        ):
            pass
        self._cpu_ms += (time.thread_time() - cpu) * 1000

    def _collect(self, until: str) -> Iterator[Any]:
        """Run the loop until one (or every) queued item is done; emit the done items' records in queue order."""
        cpu = time.thread_time()  # the event loop runs on this thread: the client's own CPU
        self._loop.run_until_complete(asyncio.wait(self._pending, return_when=until))
        self._cpu_ms += (time.thread_time() - cpu) * 1000
        for task in [t for t in self._pending if t.done()]:
            item, ann, n_calls, window, timestamp = self._pending.pop(task)
            self._queued -= n_calls
            outcomes = task.result()  # an error no outcome describes (a bug) fails the bundle
            for outcome in outcomes:
                self._usage[window] = run_stats.add_usage(self._usage.get(window, {}), outcome.usage)
                self._progress = run_stats.add_usage(self._progress, outcome.usage)
            self._log_progress()
            for tag, record in handle_outcomes(self._stage, item, ann, outcomes):
                self._count(tag)
                if self._pictures is not None and tag in (OK, REJECTED):
                    record = {**record, "image_stages": sorted({*(record.get("image_stages") or ()), self._stage.name})}
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
            "%d retries, %d tokens, estimated cost $%.2f",
            self._stage.name,
            p.get("calls", 0),
            self._runner.throttle.in_flight,
            int(self._runner.throttle.limit),
            p.get("cache_hits", 0),
            p.get("retries", {}).get("rate_limited", 0),
            sum(p.get("retries", {}).values()),
            p.get("prompt_tokens", 0) + p.get("completion_tokens", 0),
            p.get("cost", 0.0),
        )

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
        if getattr(self, "_server", None) is not None:  # the last stage of the machine to let go stops the server
            self._server.detach()
            self._shared_server.release(self._server)
            self._server = None


class SpreadPacked(beam.PTransform):
    """Reshuffle records as packed bytes (see RunStage): the same records, spread over the workers."""

    def expand(self, records):
        return records | "Pack" >> beam.Map(pack) | "Reshuffle" >> beam.Reshuffle() | "Unpack" >> beam.Map(unpack)


class GroupForBatches(beam.PTransform):
    """(item, annotation) pairs -> the same pairs, regrouped so that one bundle holds about one batch file's worth
    of calls (``--llm_batch_max_requests`` lines, ``--llm_batch_max_mb``), whatever the upstream bundle sizes."""

    def __init__(self, stage: Stage, config: LLMConfig) -> None:
        super().__init__()
        self._stage, self._config = stage, config

    def expand(self, items):
        stage, config = self._stage, self._config
        totals = (
            items
            | "RequestSizes" >> beam.Map(lambda pair: request_size(stage.calls(*pair)))
            | "TotalRequestSize" >> beam.CombineGlobally(add_sizes)
        )
        return (
            items
            | "KeyByBatch"
            >> beam.Map(
                lambda pair, t: (stable_int(item_key(pair[0])) % batch_groups(t, config), pack(pair)),
                beam.pvalue.AsSingleton(totals),
            )
            | "GroupIntoBatchFiles" >> beam.GroupByKey()
            | "Ungroup" >> beam.FlatMap(lambda group: map(unpack, group[1]))
        )


def item_key(item: dict[str, Any]) -> str:
    """An item's id (an annotation record's image key)."""
    return item.get("id") or unit_of(item)


def pair_with_annotation(group: tuple[str, dict[str, list[bytes]]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(image key, {"ann": [packed record], "items": [packed items]}) -> (item, record) for each item: the record
    unpacked once, one object shared by the image's items."""
    key, joined = group
    if not joined["items"]:
        return
    if len(joined["ann"]) != 1:  # a bug upstream, never data: fail loudly
        raise ValueError(f"{len(joined['ann'])} annotation records for image {key!r}")
    ann = unpack(joined["ann"][0])
    for packed in joined["items"]:
        yield unpack(packed), ann


class RunStage(beam.PTransform):
    """items -> StageResult, via a shuffle and RunStageFn, which is handed each item with its image's record.

    With ``annotations`` (``(unit_of(record), packed record)`` pairs), the shuffle is a join: items travel
    without their image's annotation record, which crosses each stage's shuffle once per image instead
    of once per item. Without, the items are the annotation records themselves (the first stage).
    Whatever crosses a shuffle is packed (one compressed bytes value): the local runner holds a
    shuffle's values decoded until its consumer runs, and a packed item costs a fraction of a dict.
    """

    def __init__(
        self,
        stage: Stage,
        config: LLMConfig,
        reshuffle: bool = True,
        backend: Callable[[], Backend] | None = None,
        annotations: beam.PCollection | None = None,
    ) -> None:
        super().__init__()
        self._stage, self._config, self._reshuffle, self._backend = stage, config, reshuffle, backend
        self._annotations = annotations

    def expand(self, items) -> StageResult:
        if self._annotations is not None:
            keyed = items | "KeyByImage" >> beam.Map(lambda it: (unit_of(it), pack(it)))
            pairs = (
                {"ann": self._annotations, "items": keyed}
                | "JoinAnnotations" >> beam.CoGroupByKey()
                | ("PairWithAnnotations" >> beam.FlatMap(pair_with_annotation))
            )
        else:
            if self._reshuffle:
                items = items | "Spread" >> SpreadPacked()
            pairs = items | "PairWithItself" >> beam.Map(lambda record: (record, record))
        if self._config.mode == "batch":
            pairs = pairs | "GroupForBatches" >> GroupForBatches(self._stage, self._config)
        results = pairs | "Call" >> beam.ParDo(RunStageFn(self._stage, self._config, self._backend)).with_outputs(
            REJECTED, FAILED, USAGE, SKIPPED, main=OK
        )
        return StageResult(results[OK], results[REJECTED], results[FAILED], results[USAGE], results[SKIPPED])
