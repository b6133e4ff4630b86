"""The LLM layer without Beam: classifier, backoff, config, cache keys, reply parsing, runner."""

from __future__ import annotations

import asyncio
import json
import random

import httpx2
import openai
import pytest

from comvint.llm.cache import ResponseCache, cache_key
from comvint.llm.client import OpenAIBackend, Reply
from comvint.llm.config import LLMConfig, parse_prices, parse_stage_models, parse_stage_temperatures
from comvint.llm.retry import ReplyError, backoff, classify, retry_after_seconds
from comvint.llm.runner import Call, StageRunner, latency_bucket, parse_reply
from comvint.testing.fake_openai import FakeOpenAI, echo_json, last_user_message
from comvint.testing.stores import MemoryStore

SCHEMA = {
    "type": "object",
    "properties": {"echo": {"type": "string"}},
    "required": ["echo"],
    "additionalProperties": False,
}


def _status_error(status: int, headers: dict | None = None) -> openai.APIStatusError:
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = httpx2.Response(status, headers=headers or {}, request=request)
    return openai.APIStatusError("boom", response=response, body=None)


@pytest.mark.parametrize(
    "status, retryable, cause",
    [
        (429, True, "rate_limited"),
        (500, True, "http_500"),
        (502, True, "http_502"),
        (503, True, "http_503"),
        (408, True, "http_408"),
        (400, False, "http_400"),
        (401, False, "http_401"),
        (403, False, "http_403"),
        (404, False, "http_404"),
        (422, False, "http_422"),
    ],
)
def test_classify_status(status, retryable, cause):
    assert classify(_status_error(status)) == (retryable, cause)


def test_classify_other_errors():
    request = httpx2.Request("POST", "http://127.0.0.1/")
    assert classify(openai.APITimeoutError(request=request)) == (True, "timeout")
    assert classify(openai.APIConnectionError(request=request)) == (True, "connection")
    assert classify(ReplyError("invalid_json", "x")) == (True, "invalid_json")
    assert classify(KeyError("bug")) == (False, "KeyError")


def test_retry_after_and_backoff():
    assert retry_after_seconds(_status_error(429, {"Retry-After": "7"})) == 7.0
    assert retry_after_seconds(_status_error(429)) is None
    rng = random.Random(1)
    delays = [backoff(a, 0.5, 4.0, rng) for a in range(1, 12)]
    assert all(0 <= d <= 4.0 for d in delays)
    assert backoff(1, 0.5, 30.0, rng, retry_after=7.0) >= 7.0
    assert backoff(1, 0.5, 30.0, rng, retry_after=100.0) == 30.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"backend": "x"},
        {"temperature": 3},
        {"stage_temperatures": (("verify", -1.0),)},
        {"max_tokens": 0},
        {"timeout": 0},
        {"max_retries": -1},
        {"concurrency": 0},
        {"rpm": -1},
        {"response_format": "yaml"},
        {"backoff_base": 10, "backoff_cap": 1},
    ],
)
def test_config_validation(kwargs):
    with pytest.raises(ValueError):
        LLMConfig(**kwargs)


def test_config_parsing_and_cost():
    assert parse_stage_models("verify=small, generate=big") == (("generate", "big"), ("verify", "small"))
    prices = parse_prices("big=2.5:10,small=0.1:0.4")
    config = LLMConfig(model="big", stage_models=parse_stage_models("verify=small"), prices=prices)
    assert config.model_for("verify") == "small" and config.model_for("generate") == "big"
    assert config.cost("big", 1_000_000, 100_000) == pytest.approx(3.5)
    assert config.cost("unknown", 1, 1) is None
    for bad in ("verify", "=x"):
        with pytest.raises(ValueError):
            parse_stage_models(bad)
    temps = LLMConfig(temperature=0.9, stage_temperatures=parse_stage_temperatures("verify=0, generate=1.2"))
    assert (
        temps.temperature_for("verify"),
        temps.temperature_for("generate"),
        temps.temperature_for("reformulate"),
    ) == (0.0, 1.2, 0.9)
    assert LLMConfig().temperature_for("verify") == 0.0  # the judge is greedy by default
    with pytest.raises(ValueError):
        parse_stage_temperatures("verify=cold")
    with pytest.raises(ValueError):
        parse_prices("m=1")


def _key(**changes):
    base = dict(
        base_url=None,
        model="m",
        messages=[{"role": "user", "content": "hi"}],
        params={"temperature": 0.7},
        schema=SCHEMA,
        response_format="json_schema",
        prompt_version="v1",
    )
    return cache_key(**{**base, **changes})


def test_cache_key_stable_and_sensitive():
    assert _key() == _key() == str(_key())
    assert (
        len(
            {
                _key(),
                _key(model="n"),
                _key(prompt_version="v2"),
                _key(params={"temperature": 0}),
                _key(schema={}),
                _key(response_format="json_object"),
                _key(base_url="http://x"),
                _key(messages=[{"role": "user", "content": "hi!"}]),
            }
        )
        == 8
    )


def test_cache_write_once():
    cache = ResponseCache(MemoryStore())
    assert cache.get("k") is None
    assert cache.put("k", {"reply": {"text": "a"}}) is True
    assert cache.put("k", {"reply": {"text": "b"}}) is False
    assert cache.get("k")["reply"]["text"] == "a"


@pytest.mark.parametrize(
    "text, finish, reason",
    [
        ('{"echo": "x"}', "stop", None),
        ('```json\n{"echo": "x"}\n```', "stop", None),
        ("", "stop", "invalid_json"),
        ('{"echo": ', "stop", "invalid_json"),
        ('{"echo": 3}', "stop", "schema_violation"),
        ('{"echo": "x", "more": 1}', "stop", "schema_violation"),
        ('{"echo": "x"}', "length", "truncated"),
        ('{"echo": "x"}', "content_filter", "content_filter"),
        ("Sure! here it is", "stop", "invalid_json"),
    ],
)
def test_parse_reply(text, finish, reason):
    if reason is None:
        assert parse_reply(Reply(text, finish), SCHEMA) == {"echo": "x"}
    else:
        with pytest.raises(ReplyError) as err:
            parse_reply(Reply(text, finish), SCHEMA)
        assert err.value.reason == reason and err.value.raw == text


PLAN = {
    "m1": ["429", None],
    "m2": ["500", "500", None],
    "m3": ["invalid_json", None],
    "m4": ["truncated"] * 9,
    "m5": ["400"],
    "m6": ["drop", None],
    "m7": ["content_filter", None],
    "m8": ["500"] * 9,
}


def plan_faults(body, attempt):
    seq = PLAN.get(last_user_message(body), [])
    return seq[attempt - 1] if attempt - 1 < len(seq) else None


async def _no_sleep(seconds):
    return None


def _run(server, calls, cache):
    async def go():
        config = LLMConfig(backend="openai", base_url=server.base_url, max_retries=3, timeout=5, concurrency=4)
        runner = StageRunner(config, OpenAIBackend(config, "sk-test-secret"), cache, sleep=_no_sleep)
        try:
            return await runner.run(calls)
        finally:
            await runner.backend.close()

    return asyncio.run(go())


def test_runner_against_fake_server_with_faults():
    calls = [Call(f"i{k}", "generate", [{"role": "user", "content": f"m{k}"}], "echo", SCHEMA, "v1") for k in range(10)]
    cache = ResponseCache(MemoryStore())
    with FakeOpenAI(echo_json, plan_faults, retry_after=0) as server:
        outcomes = _run(server, calls, cache)
        first_requests = len(server.requests)
        again = _run(server, calls, cache)
        # The truncated call's final reply was cached (only the final outcome is); the 400 and the
        # exhausted 500s left nothing to cache, so only they are asked again.
        assert len(server.requests) - first_requests == 1 + 4
    result = {o.call.item_id: (o.reply, o.reason) for o in outcomes}
    assert result == {
        **{f"i{k}": ({"echo": f"m{k}"}, None) for k in (0, 1, 2, 3, 6, 7, 9)},
        "i4": (None, "generate_exhausted_retries"),
        "i5": (None, "generate_permanent_error"),
        "i8": (None, "generate_exhausted_retries"),
    }
    by_id = {o.call.item_id: o for o in outcomes}
    assert by_id["i1"].usage["retries"] == {"rate_limited": 1}
    assert by_id["i2"].usage["retries"] == {"http_500": 2}
    assert by_id["i4"].raw and by_id["i4"].usage["requests"] == 4
    assert sum(o.usage.get("cache_hits", 0) for o in again) == 8
    assert {o.call.item_id: o.reason for o in again}["i4"] == "generate_truncated"  # replayed, not paid again
    assert first_requests == 1 + 2 + 3 + 2 + 4 + 1 + 2 + 2 + 4 + 1  # attempts per call, i0..i9


def test_latency_buckets():
    assert [latency_bucket(s) for s in (0.05, 0.1, 0.3, 7.0, 61.0)] == [
        "le_0.1s",
        "le_0.1s",
        "le_0.5s",
        "le_10s",
        "gt_60s",
    ]


class _Store:
    """A cache store whose reads or writes fail, or that another worker always beats to a key."""

    fast = True

    def __init__(self, fail_get=False, fail_put=False, winner=None):
        self.fail_get, self.fail_put, self.winner, self.data = fail_get, fail_put, winner, {}

    def get(self, key):
        if self.fail_get:
            raise OSError("disk gone")
        return self.data.get(key)

    def put_if_absent(self, key, value):
        if self.fail_put:
            raise OSError("bucket read-only")
        if self.winner is not None:  # another worker wrote first
            self.data[key] = json.dumps({"format": "comvint-cache-v1", "text": self.winner, "finish_reason": "stop"})
            return False
        self.data[key] = value
        return True


def _one(server, store=None, check=None, **config):
    call = Call("i0", "generate", [{"role": "user", "content": "m0"}], "echo", SCHEMA, "v1")

    async def go():
        cfg = LLMConfig(
            backend="openai",
            base_url=server.base_url,
            timeout=5,
            backoff_base=0.001,
            backoff_cap=0.002,
            **{"max_retries": 2, **config},
        )
        runner = StageRunner(
            cfg, OpenAIBackend(cfg, "sk-test-secret"), ResponseCache(store) if store else None, sleep=_no_sleep
        )
        try:
            return (await runner.run([call], check))[0]
        finally:
            await runner.backend.close()

    return asyncio.run(go())


def test_a_body_that_is_not_json_is_retried_then_a_dead_letter():
    with FakeOpenAI(echo_json, lambda body, attempt: "garbage_body") as server:
        outcome = _one(server)
    assert outcome.reason == "generate_exhausted_retries" and outcome.detail.startswith("invalid_body")
    assert "upstream proxy error" in outcome.raw and outcome.usage["requests"] == 3


def test_cache_failures_are_dead_letters_not_bundle_failures():
    with FakeOpenAI(echo_json) as server:
        unread = _one(server, _Store(fail_get=True))
        assert len(server.requests) == 0  # nothing paid for a call whose cache cannot be read
        unwritten = _one(server, _Store(fail_put=True))
    assert (unread.reason, unread.detail) == ("generate_cache_error", "read: disk gone")
    assert unwritten.reason == "generate_cache_error" and unwritten.raw == '{"echo": "m0"}'  # the paid reply is kept


def test_the_loser_of_a_cache_race_takes_the_winners_reply():
    with FakeOpenAI(echo_json) as server:
        outcome = _one(server, _Store(winner='{"echo": "from the winner"}'))
    assert outcome.reply == {"echo": "from the winner"} and outcome.usage["cache_races_lost"] == 1


def test_a_truncated_reply_is_retried_with_more_tokens():
    with FakeOpenAI(echo_json, lambda body, attempt: "truncated" if attempt < 3 else None) as server:
        outcome = _one(server, max_tokens=100)
        assert [b["max_tokens"] for b in server.requests] == [100, 200, 400]
    assert outcome.reply == {"echo": "m0"} and outcome.usage["retries"] == {"truncated": 2}


def test_an_unusable_reply_is_retried_with_another_seed_and_only_the_final_one_cached():
    from comvint.llm.retry import UnusableReply

    seen = []

    def check(call, reply):
        seen.append(reply)
        if len(seen) < 2:
            raise UnusableReply("repeated_options", "options repeat")

    store = _Store()
    with FakeOpenAI(echo_json) as server:
        outcome = _one(server, store, check)
        assert [b.get("seed") for b in server.requests] == [None, 1]
    assert outcome.reason is None and outcome.usage["retries"] == {"unusable": 1} and len(store.data) == 1
    always = _Store()
    with FakeOpenAI(echo_json) as server:
        failed = _one(
            server, always, lambda call, reply: (_ for _ in ()).throw(UnusableReply("repeated_options", "no"))
        )
    assert failed.reason == "generate_repeated_options" and len(always.data) == 1  # the final outcome, cached once


def test_an_unexpected_error_of_one_call_is_its_dead_letter():
    with FakeOpenAI(echo_json) as server:
        outcome = _one(server, check=lambda call, reply: 1 / 0)
    assert outcome.reason == "generate_unexpected_error" and outcome.detail.startswith("ZeroDivisionError")


def test_fake_quota_sends_openai_headers_and_refuses_past_the_budget():
    import httpx

    with FakeOpenAI(echo_json, quota_rpm=2) as server:
        replies = [
            httpx.post(f"{server.base_url}/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
            for _ in range(3)
        ]
    assert [r.status_code for r in replies] == [200, 200, 429]
    assert (
        replies[0].headers["x-ratelimit-remaining-requests"] == "1"
        and replies[1].headers["x-ratelimit-remaining-requests"] == "0"
    )
    assert float(replies[2].headers["retry-after-ms"]) > 59_000 and server.refused == 1 and len(server.accepted) == 2


def test_fake_bucket_quota_enforces_a_minute_limit_per_second():
    import httpx

    with FakeOpenAI(echo_json, quota_rpm=60, quota_kind="bucket") as server:  # 1 a second, at most 1 at once
        replies = [
            httpx.post(f"{server.base_url}/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
            for _ in range(2)
        ]
    assert [r.status_code for r in replies] == [200, 429]  # the second well within a second of the first
    assert (
        replies[0].headers["x-ratelimit-limit-requests"] == "60"
        and replies[1].headers["x-ratelimit-remaining-requests"] == "0"
    )
    assert 0 < float(replies[1].headers["retry-after-ms"]) <= 1001 and server.refused == 1
