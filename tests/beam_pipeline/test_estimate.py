"""``python -m beam_pipeline.estimate``: a projection before the run, sending nothing, close to what the run sends."""

from __future__ import annotations

import json

import pytest

from beam_pipeline import estimate as cli
from beam_pipeline import main
from comvint import estimate
from comvint.testing import ModelLikeFake
from comvint.testing.fake_openai import FakeOpenAI

KEYS = ("requests", "prompt_tokens", "completion_tokens", "cost_usd", "hours")


def test_the_estimate_sends_nothing_and_prints_one_json_object(capsys):
    with FakeOpenAI(ModelLikeFake(len)) as server:
        cli.main(
            [
                "--llm",
                "openai",
                "--llm_base_url",
                server.base_url,
                "--llm_model",
                "gpt-4o-mini",
                "--llm_prices",
                "gpt-4o-mini=0.15:0.6",
                "--llm_rpm",
                "600",
                "--json",
            ]
        )
        assert server.accepted == [] and server.refused == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert all(set(result[k]) == set(estimate.CASES) for k in KEYS)
    for key in ("requests", "prompt_tokens", "completion_tokens", "cost_usd", "hours"):
        assert 0 < result[key]["low"] <= result[key]["expected"] <= result[key]["high"], key
    assert result["assumptions"]["tokenizer"] == "o200k_base" and result["inputs"]["images"] == {
        "flickr30k_entities": 7,
        "visual_genome": 6,
    }


def test_an_estimate_from_an_earlier_run_lands_within_15_percent_of_what_the_run_sends(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-estimate-test")
    count, _ = cli.tokenizer("gpt-4o-mini")
    fake = ModelLikeFake(count)
    flags = ["--llm_model", "gpt-4o-mini", "--seed", "3"]
    with FakeOpenAI(fake) as server:
        main.run([*flags, "--llm", "openai", "--llm_base_url", server.base_url, "--output", str(tmp_path / "a")])
    cli.main([*flags, "--estimate_from", str(tmp_path / "a"), "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["requests"]["expected"] == pytest.approx(fake.requests, rel=0.15)
    assert result["prompt_tokens"]["expected"] == pytest.approx(fake.prompt_tokens, rel=0.15)
    assert result["requests"]["low"] <= fake.requests <= result["requests"]["high"]


def test_the_method_expansion_and_the_rates_an_earlier_run_measured():
    calls = estimate.calls_per_image(
        estimate.Rates(g=3, p=0.5, c=1.0, a=1.0), rounds=2, share=0.5, verify_reformulations=True
    )
    # verified per round: 1.5, 0.75, 0.375; verify calls 3 + 1.5 + 0.75; complicate calls 1.5 + 0.75
    assert calls == pytest.approx(
        {"generate": 1, "verify": 5.25, "complicate": 2.25, "reformulate": 1.3125, "verify_reformulated": 3.9375}
    )
    stats = {
        "rounds": 2,
        "counts": {
            "funnel": {"step": {"images_used": 10, "reformulated": 27}},
            "verdicts": {
                "round_verdict": {"0:passed": 24, "0:failed": 6, "1:passed": 12, "1:failed": 6, "2:passed": 6}
            },
        },
        "llm": {"complicate": {"calls": 36}, "reformulate": {"calls": 10}},
    }
    rates = estimate.rates_from_stats(stats)
    assert rates["expected"] == estimate.Rates(g=3.0, p=42 / 54, c=24 / 36, a=0.9, s=10 / 42)
    assert rates["low"].p < rates["expected"].p < rates["high"].p <= 1.0


def test_hours_follow_the_budgets_or_the_batch_waves():
    projection = {
        "requests": {c: 6000 for c in estimate.CASES},
        "prompt_tokens": {c: 1_000_000 for c in estimate.CASES},
        "completion_tokens": {c: 200_000 for c in estimate.CASES},
    }
    assert estimate.hours(projection, rpm=100, tpm=0, batch=False, rounds=2)["expected"] == 1.0
    assert estimate.hours(projection, rpm=100, tpm=10_000, batch=False, rounds=2)["expected"] == 2.0  # tokens bind
    assert estimate.hours(projection, rpm=0, tpm=0, batch=False, rounds=2)["expected"] is None
    assert estimate.hours(projection, rpm=0, tpm=0, batch=True, rounds=2)["high"] == 8 * 24


def test_an_unpriced_model_has_no_cost_and_an_unknown_tokenizer_falls_back_to_characters():
    pricing = estimate.Pricing({"generate": "m"}, {})
    assert pricing.cost("generate", 1000, 10) is None
    count, name = cli.tokenizer("Qwen/Qwen2-VL-7B-Instruct")
    assert count("abcdefgh") == 2 and "characters per token" in name


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--llm_modle", "x"], "unknown argument(s) --llm_modle"),
        (["--estimate_from", "/nonexistent/run"], "no stats.json there"),
        (["--llm_prices", "gpt-4o-mini=cheap"], "bad --llm_prices entry"),
    ],
)
def test_a_bad_flag_stops_the_estimate_with_one_line(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(flags)
    assert exit_.value.code == 2 and message in capsys.readouterr().err
