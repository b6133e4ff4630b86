"""Batch API mode without Beam: batch files, every status, retries into follow-up batches, the ledger and
resuming, and the cost cap. Each test drives the StageRunner the way the stage DoFn does, against the fake
endpoint's batch API."""

from __future__ import annotations

import asyncio
import json
import threading

import openai
import pytest

from comvint.llm.batch import (
    BatchBackend,
    Ledger,
    Line,
    cancel_outstanding,
    endpoint_of,
    flush_when_waiting,
    plan_files,
)
from comvint.llm.budget import BUDGET_EXHAUSTED, Budget, BudgetExhausted
from comvint.llm.cache import ResponseCache
from comvint.llm.config import ConfigError, LLMConfig
from comvint.llm.runner import Call, StageRunner, call_key
from comvint.testing.fake_openai import FakeOpenAI, echo_json, last_user_message
from comvint.testing.stores import MemoryLedgerStore, MemoryStore

SCHEMA = {
    "type": "object",
    "properties": {"echo": {"type": "string"}},
    "required": ["echo"],
    "additionalProperties": False,
}


def _config(server: FakeOpenAI, **kw) -> LLMConfig:
    return LLMConfig(
        **{
            "backend": "openai",
            "base_url": server.base_url,
            "model": "m",
            "mode": "batch",
            "cache_dir": "unused",
            "batch_poll_s": 0.001,
            "max_retries": 2,
            **kw,
        }
    )


def _calls(n: int, stage: str = "verify") -> list[Call]:
    return [Call(f"i{k}", stage, [{"role": "user", "content": f"question {k}"}], "s", SCHEMA, "v1") for k in range(n)]


async def _drive(
    config: LLMConfig,
    calls: list[Call],
    ledger: Ledger,
    cache: ResponseCache | None = None,
    budget: Budget | None = None,
):
    """What RunStageFn does in batch mode: queue every call, flush while calls wait, then collect the outcomes."""
    backend = BatchBackend(config, "sk-test", ledger)
    runner = StageRunner(config, backend, cache if cache is not None else ResponseCache(MemoryStore()), budget=budget)
    task = asyncio.ensure_future(runner.run(calls))
    while await flush_when_waiting(backend, lambda: len(calls) - runner.finished, calls[0].stage):
        pass
    outcomes = await task
    await backend.close()
    return outcomes, backend


def run(config, calls, ledger=None, **kw):
    return asyncio.run(_drive(config, calls, ledger or Ledger(MemoryLedgerStore()), **kw))


def test_plan_files_respects_both_limits_and_one_model_per_file():
    lines = [Line(f"c{k}", "a" if k % 3 else "b", {"messages": "x" * 50}) for k in range(20)]
    size = len(lines[0].encoded())
    files = plan_files(lines, max_requests=4, max_bytes=3 * size)
    assert sorted(x.custom_id for f in files for x in f) == sorted(x.custom_id for x in lines)  # each line once
    assert all(len({x.model for x in f}) == 1 and len(f) <= 3 for f in files)
    assert len(plan_files(lines, max_requests=5, max_bytes=1 << 30)) == 2 + 3  # 7 "b" lines -> 2 files, 13 "a" -> 3


def test_every_reply_comes_back_by_custom_id_through_the_batch_api_only():
    with FakeOpenAI(echo_json) as server:
        calls = _calls(25)
        outcomes, backend = run(_config(server, batch_max_requests=10), calls)
        assert not server.requests  # no online call
        assert [len(b) for b in sorted(server.batch_lines, key=len)] == [5, 10, 10]
        uploaded = [
            json.loads(x) for f in server.files.values() if f["purpose"] == "batch" for x in f["data"].splitlines()
        ]
    # the fake writes output lines shuffled: each reply still matches its own call
    assert [o.reply["echo"] for o in outcomes] == [f"question {k}" for k in range(25)]
    assert {u["url"] for u in uploaded} == {"/v1/chat/completions"} and all(u["method"] == "POST" for u in uploaded)
    assert len({u["custom_id"] for u in uploaded}) == 25
    assert backend.batches_submitted == 3 and backend.lines_submitted == 25


def test_statuses_seen_on_the_way_are_progress_not_a_hang():
    hold = threading.Event()
    with FakeOpenAI(echo_json, batch_hold=hold) as server:
        store = MemoryLedgerStore()
        seen = []
        original = store.write

        def record(name, text):
            seen.append(json.loads(text)["status"])
            if seen[-1] == "in_progress":
                hold.set()  # the batch stayed in progress until now
            original(name, text)

        store.write = record
        outcomes, _ = run(_config(server), _calls(3), Ledger(store))
    assert all(o.reason is None for o in outcomes)
    assert seen == ["uploaded", "validating", "in_progress", "finalizing", "completed", "collected"]


def test_error_file_lines_are_retried_in_a_follow_up_batch_then_dead_lettered():
    def faults(body, attempt):
        text = last_user_message(body)
        if text == "question 0":
            return "500"  # always: exhausts the retries
        if text == "question 1":
            return "400"  # permanent: not retried
        if text in ("question 2", "question 3") and attempt == 1:
            return "429" if text == "question 2" else "missing"
        return None

    with FakeOpenAI(echo_json, batch_faults=faults) as server:
        outcomes, backend = run(_config(server, max_retries=2), _calls(6))
        batches = server.batch_lines
    by_item = {o.call.item_id: o for o in outcomes}
    assert by_item["i0"].reason == "verify_exhausted_retries" and "batch_http_500" in by_item["i0"].detail
    assert by_item["i1"].reason == "verify_permanent_error"
    assert by_item["i2"].reply == {"echo": "question 2"} and by_item["i3"].reply == {"echo": "question 3"}
    assert by_item["i2"].usage["retries"] == {"batch_http_429": 1} and by_item["i3"].usage["retries"] == {
        "batch_missing_line": 1
    }
    assert len(batches) == 3 and sorted(map(len, batches)) == [1, 3, 6]  # 0, 2, 3 retried; then 0 again


def test_a_batch_with_only_an_error_file_is_read():
    with FakeOpenAI(echo_json, batch_faults=lambda body, attempt: "500" if attempt == 1 else None) as server:
        outcomes, _ = run(_config(server), _calls(4))
        first = server.batches["batch_1"]
    assert first["output_file_id"] is None and first["error_file_id"] and first["status"] == "completed"
    assert all(o.reply is not None for o in outcomes)


def test_an_expired_batch_resubmits_only_its_unfinished_lines():
    with FakeOpenAI(echo_json, batch_end=lambda n: "expired" if n == 0 else "completed") as server:
        outcomes, _ = run(_config(server), _calls(8))
        first, second = server.batch_lines
    assert all(o.reply is not None for o in outcomes)
    assert len(second) == 4 and set(second) < set(first)  # the half the expired batch did not answer


def test_a_failed_batch_dead_letters_its_lines():
    with FakeOpenAI(echo_json, batch_end=lambda n: "failed") as server:
        outcomes, _ = run(_config(server), _calls(3))
        assert len(server.batch_lines) == 1  # a batch that failed validation is not resubmitted
    assert {o.reason for o in outcomes} == {"verify_batch_failed"}


def test_a_cancelled_batch_is_read_back_and_a_rerun_submits_its_lines_again():
    hold = threading.Event()
    with FakeOpenAI(echo_json, batch_hold=hold) as server:
        ledger, calls = Ledger(MemoryLedgerStore()), _calls(3)

        async def cancel_while_running():
            job = asyncio.ensure_future(_drive(_config(server), calls, ledger))
            while not any(e.batch_id for e in ledger.entries()):
                await asyncio.sleep(0)
            client = openai.AsyncOpenAI(api_key="k", base_url=server.base_url)
            cancelled = await cancel_outstanding(ledger, client, endpoint_of(_config(server)))
            await client.close()
            return cancelled, await job

        cancelled, (outcomes, _) = asyncio.run(cancel_while_running())
        assert cancelled == [("batch_1", "cancelling")]
        assert {o.reason for o in outcomes} == {"verify_batch_cancelled"}
        hold.set()
        rerun, backend = run(_config(server), calls, ledger)
    assert backend.batches_resumed == 0 and backend.batches_submitted == 1
    assert all(o.reply is not None for o in rerun)


def test_a_killed_run_resumes_its_batch_and_submits_no_line_twice():
    hold = threading.Event()
    with FakeOpenAI(echo_json, batch_hold=hold) as server:
        ledger, cache, calls = Ledger(MemoryLedgerStore()), ResponseCache(MemoryStore()), _calls(12)

        async def killed():
            job = asyncio.ensure_future(_drive(_config(server, batch_max_requests=5), calls, ledger, cache))
            while sum(1 for e in ledger.entries() if e.status == "in_progress") < 3:
                await asyncio.sleep(0)
            job.cancel()  # the worker dies with its three batches in flight
            with pytest.raises(asyncio.CancelledError):
                await job

        asyncio.run(killed())
        assert len(server.batch_lines) == 3
        hold.set()
        outcomes, backend = run(_config(server, batch_max_requests=5), calls, ledger, cache=cache)
        assert backend.batches_resumed == 3 and backend.batches_submitted == 0
        assert len(server.batch_lines) == 3  # nothing submitted again
        again, backend = run(_config(server), calls, ledger, cache=cache)
        assert backend.waiting == 0 and backend.batches_submitted == backend.batches_resumed == 0  # all from the cache
    assert (
        [o.reply["echo"] for o in outcomes] == [o.reply["echo"] for o in again] == [f"question {k}" for k in range(12)]
    )


def test_a_run_killed_between_upload_and_batch_creation_reuses_the_uploaded_file():
    with FakeOpenAI(echo_json) as server:
        config, calls, ledger = _config(server), _calls(4), Ledger(MemoryLedgerStore())
        backend = BatchBackend(config, "k", ledger)

        async def upload_only():
            lines = [Line(call_key(config, c, "m"), "m", {"model": "m", "messages": c.messages}) for c in calls]
            backend._create = _die  # the process dies after the ledger entry is written, before the batch exists
            try:
                await backend._submit("verify", lines)
            finally:
                await backend.close()

        with pytest.raises(Died):
            asyncio.run(upload_only())
        (entry,) = ledger.entries()
        assert entry.batch_id is None and entry.status == "uploaded"
        outcomes, rerun = run(config, calls, ledger)
        assert len([f for f in server.files.values() if f["purpose"] == "batch"]) == 1  # not uploaded again
        assert rerun.batches_resumed == 1 and len(server.batch_lines) == 1
    assert all(o.reply is not None for o in outcomes)


class Died(BaseException):
    """The worker process ends (nothing in the job catches it)."""


async def _die(entry):
    raise Died


def test_the_cost_cap_stops_spending_and_a_higher_cap_continues_from_the_cache():
    # Each call's estimate: (prompt ~11 tokens + 100 completion tokens) at $1/$1 per 1M, halved by the batch discount.
    prices = (("m", 1.0, 1.0),)
    with FakeOpenAI(echo_json) as server:
        cache, calls = ResponseCache(MemoryStore()), _calls(10)
        capped = _config(server, prices=prices, max_tokens=100, max_cost_usd=0.0003)
        outcomes, _ = run(capped, calls, cache=cache)
        paid = [o for o in outcomes if o.reply is not None]
        unpaid = [o for o in outcomes if o.reason == BUDGET_EXHAUSTED]
        assert len(paid) + len(unpaid) == 10 and 0 < len(paid) < 10
        assert sum(len(b) for b in server.batch_lines) == len(paid)  # an unpaid call is never sent
        assert sum(o.usage.get("cost", 0) for o in paid) <= 0.0003
        outcomes, backend = run(_config(server, prices=prices, max_tokens=100, max_cost_usd=1.0), calls, cache=cache)
        assert backend.lines_submitted == len(unpaid)
    assert all(o.reply is not None for o in outcomes)


def test_budget_reserves_and_settles():
    budget = Budget(1.0)
    held = budget.reserve(0.6)
    with pytest.raises(BudgetExhausted):
        budget.reserve(0.5)
    budget.settle(held, 0.1)
    assert budget.reserve(0.5) == 0.5 and budget.spent == 0.1
    assert Budget(0).reserve(1e9) == 1e9  # no cap


def test_the_batch_discount_applies_to_batch_mode_costs_only():
    prices = (("m", 2.0, 4.0),)
    assert LLMConfig(prices=prices).cost("m", 1_000_000, 1_000_000) == 6.0
    assert (
        LLMConfig(backend="openai", mode="batch", cache_dir="c", prices=prices).cost("m", 1_000_000, 1_000_000) == 3.0
    )
    assert (
        LLMConfig(backend="openai", mode="batch", cache_dir="c", prices=prices, batch_discount=0.25).cost(
            "m", 1_000_000, 0
        )
        == 1.5
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mode": "batch", "backend": "openai"}, "needs --cache_dir"),
        ({"mode": "batch", "cache_dir": "c"}, "needs --llm openai"),
        ({"mode": "later"}, "--llm_mode must be"),
        (
            {
                "backend": "openai",
                "max_cost_usd": 5.0,
                "stage_models": (("verify", "big"),),
                "prices": (("gpt-4o-mini", 1.0, 1.0),),
            },
            "--llm_prices entry for big",
        ),
    ],
)
def test_settings_that_cannot_run_together_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        LLMConfig(**kwargs)
