"""What a run will cost before it is made: the requests of every stage rendered on a sample of the inputs,
counted with the model's tokenizer, and projected to the whole input by the method's expansion.

* **Rendering**: each sampled image goes through the method as the job runs it (Synthesize, the
  complicate ⟲ verify rounds with Evol-Instruct's elimination, Reformulate, VerifyReformulated), with the
  offline engine's replies standing in for the model's, so every later stage's request is about a real item
  of that image. The mean prompt tokens per call of each stage and source come from those requests
  (text by the tokenizer, 3 tokens per message and 3 per reply as OpenAI frames them; pictures by the model's
  image formula on the stages that send them).
* **Expansion**: per image kept by the image filter (its share measured on the sample), ``g`` items are
  synthesized; a judge passes a share ``p``; a complication gives a usable harder item with share ``c``; a
  ``--reformulate_share`` of the verified items is reformulated, which gives judged children (2 Bool + 1
  multiple choice) with share ``a``. So round ``r`` verifies ``g·(p·c)^r`` items and complicates
  ``g·p·(p·c)^r`` of them. The rates have stated defaults (low, expected, high: :data:`DEFAULT_RATES`) or are
  measured from an earlier run's ``stats.json`` (``--estimate_from``).
* **Completions**: the engine's reply to each request, in tokens, is the expected completion size; half of it
  is the low bound and ``--llm_max_tokens`` the high one (a call cannot bill more).
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from comvint import engine
from comvint.images import image_tokens
from comvint.stages.base import OK, ParseError
from comvint.stages.method import (
    Complicate,
    MethodConfig,
    Reformulate,
    Synthesize,
    Verify,
    VerifyReformulated,
    eliminate,
    image_filter,
    reformulate_selected,
)

STAGES = ("generate", "verify", "complicate", "reformulate", "verify_reformulated")
CASES = ("low", "expected", "high")
MESSAGE_TOKENS, REPLY_TOKENS = 3, 3  # OpenAI's framing: per message, and the reply's priming
DEFAULT_SIZE = (500, 375)  # a picture's size when the annotations do not give it (Flickr30k's typical)
BATCH_WAVE_HOURS = {"low": 0.25, "expected": 2.0, "high": 24.0}  # one Batch API batch: OpenAI's window is 24 h


@dataclasses.dataclass(frozen=True)
class Rates:
    """The method's expansion: items per image ``g``, judge pass share ``p``, usable complication share ``c``,
    usable reformulation share ``a``, children per reformulation ``k``, and the share of verified items
    reformulated ``s`` (None: ``--reformulate_share``; an earlier run measures the share its seed chose)."""

    g: float
    p: float
    c: float
    a: float
    k: float = 3.0
    s: float | None = None


# Stated defaults: what an instruction-following model does with the paper's prompts (items asked for: 3).
DEFAULT_RATES = {
    "low": Rates(2.0, 0.6, 0.6, 0.8),
    "expected": Rates(3.0, 0.8, 0.85, 0.95),
    "high": Rates(3.0, 0.95, 1.0, 1.0),
}


MEASURED_BAND = 0.1  # low/high around measured rates: another slice of the data differs by about this much


def rates_from_stats(stats: Mapping[str, Any]) -> dict[str, Rates]:
    """The expansion an earlier run measured (its funnel, verdicts and calls) as the expected rates, and
    :data:`MEASURED_BAND` below and above them (shares capped at 1) as low and high; Evol-Instruct's elimination
    is folded into ``g`` (round 0) and ``c`` (later rounds)."""
    steps = stats["counts"]["funnel"]["step"]
    verdicts = stats["counts"].get("verdicts", {}).get("round_verdict", {})
    judged_in = {}
    for key, n in verdicts.items():
        judged_in[int(key.split(":")[0])] = judged_in.get(int(key.split(":")[0]), 0) + n
    judged = sum(judged_in.values())
    passed = sum(n for key, n in verdicts.items() if key.endswith(":passed"))
    complicate_calls = stats["llm"].get("complicate", {}).get("calls", 0)
    reformulate_calls = stats["llm"].get("reformulate", {}).get("calls", 0)
    measured = Rates(
        g=judged_in.get(0, 0) / max(1, steps.get("images_used", 0)),
        p=passed / judged if judged else 1.0,
        c=sum(n for r, n in judged_in.items() if r > 0) / complicate_calls if complicate_calls else 1.0,
        a=steps.get("reformulated", 0) / (3 * reformulate_calls) if reformulate_calls else 1.0,
        s=reformulate_calls / sum(n for key, n in verdicts.items() if key.endswith(":passed")) if passed else None,
    )
    return {
        "low": _scaled(measured, 1 - MEASURED_BAND),
        "expected": measured,
        "high": _scaled(measured, 1 + MEASURED_BAND),
    }


def _scaled(rates: Rates, factor: float) -> Rates:
    share = None if rates.s is None else min(1.0, rates.s * factor)
    return Rates(
        rates.g * factor,
        min(1.0, rates.p * factor),
        min(1.0, rates.c * factor),
        min(1.0, rates.a * factor),
        rates.k,
        share,
    )


def calls_per_image(rates: Rates, rounds: int, share: float, verify_reformulations: bool) -> dict[str, float]:
    """Expected calls of each stage per image kept by the image filter."""
    pc = rates.p * rates.c
    verified = sum(rates.g * rates.p * pc**r for r in range(rounds + 1))
    reformulate = (share if rates.s is None else rates.s) * verified
    return {
        "generate": 1.0,
        "verify": sum(rates.g * pc**r for r in range(rounds + 1)),
        "complicate": sum(rates.g * rates.p * pc**r for r in range(rounds)),
        "reformulate": reformulate,
        "verify_reformulated": reformulate * rates.a * rates.k if verify_reformulations else 0.0,
    }


def trace(
    ann: dict[str, Any], cfg: MethodConfig, verify_reformulations: bool = True
) -> list[tuple[Any, dict[str, Any]]]:
    """Every (call, engine reply) the method makes for one image, the engine answering in the model's place."""
    made: list[tuple[Any, dict[str, Any]]] = []

    def step(stage, item) -> list[dict[str, Any]]:
        calls = stage.calls(item, ann)
        replies = [engine.answer(call.stage, call.context) for call in calls]
        made.extend(zip(calls, replies, strict=True))
        try:
            return [record for tag, record in stage.handle(item, ann, replies) if tag == OK]
        except ParseError:
            return []

    candidates, verified = step(Synthesize(cfg), ann), []
    for r in range(cfg.rounds + 1):
        passed = [v for item in candidates if eliminate(item) is None for v in step(Verify(cfg), item)]
        verified += passed
        if r < cfg.rounds:
            candidates = [child for item in passed for child in step(Complicate(cfg), item)]
    for item in verified:
        if reformulate_selected(item, cfg):
            for child in step(Reformulate(cfg), item):
                if verify_reformulations:
                    step(VerifyReformulated(cfg), child)
    return made


@dataclasses.dataclass(frozen=True)
class Pricing:
    """What a request costs: the model of each stage, its price per 1M tokens (in, out), the batch discount."""

    models: Mapping[str, str]
    prices: Mapping[str, tuple[float, float]]
    batch_discount: float = 0.0

    def cost(self, stage: str, prompt: float, completion: float) -> float | None:
        price = self.prices.get(self.models[stage])
        if price is None:
            return None
        return (prompt * price[0] + completion * price[1]) / 1e6 * (1.0 - self.batch_discount)


@dataclasses.dataclass
class StageSizes:
    """Measured on the sample, per stage: prompt tokens per call (mean) and the engine's completion tokens."""

    prompt: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    completion: dict[str, list[int]] = dataclasses.field(default_factory=dict)

    def mean_prompt(self, stage: str) -> float:
        return statistics.fmean(self.prompt[stage]) if self.prompt.get(stage) else 0.0

    def mean_completion(self, stage: str) -> float:
        return statistics.fmean(self.completion[stage]) if self.completion.get(stage) else 0.0


def measure(
    anns: Iterable[dict[str, Any]],
    cfg: MethodConfig,
    count: Callable[[str], int],
    picture_stages: Iterable[str],
    picture_tokens: Callable[[str, int, int], int],
    verify_reformulations: bool = True,
) -> tuple[dict[str, StageSizes], dict[str, list[bool]]]:
    """Per source: the sizes of every stage's requests and replies on the sample; and whether each image passed
    the image filter."""
    sizes: dict[str, StageSizes] = {}
    kept: dict[str, list[bool]] = {}
    pictured = set(picture_stages)
    for ann in anns:
        source = ann["source"]
        passed = image_filter(ann, cfg) is None
        kept.setdefault(source, []).append(passed)
        if not passed:
            continue
        width, height = (ann.get("width") or DEFAULT_SIZE[0]), (ann.get("height") or DEFAULT_SIZE[1])
        row = sizes.setdefault(source, StageSizes())
        for call, reply in trace(ann, cfg, verify_reformulations):
            text = sum(count(str(m["content"])) + MESSAGE_TOKENS for m in call.messages) + REPLY_TOKENS
            pictures = picture_tokens(call.stage, width, height) if call.stage in pictured else 0
            row.prompt.setdefault(call.stage, []).append(text + pictures)
            row.completion.setdefault(call.stage, []).append(count(json.dumps(reply)))
    return sizes, kept


def project(
    population: Mapping[str, int],
    kept: Mapping[str, list[bool]],
    sizes: Mapping[str, StageSizes],
    rates: Mapping[str, Rates],
    cfg: MethodConfig,
    max_tokens: int,
    pricing: Pricing,
    verify_reformulations: bool = True,
) -> dict[str, Any]:
    """Low / expected / high requests, tokens and cost of the whole run, per stage and in total."""
    out: dict[str, Any] = {"requests": {}, "prompt_tokens": {}, "completion_tokens": {}, "cost_usd": {}, "by_stage": {}}
    for case in CASES:
        totals = {"requests": 0.0, "prompt_tokens": 0.0, "completion_tokens": 0.0, "cost_usd": 0.0}
        priced = True
        stages: dict[str, dict[str, float]] = {}
        for source, images in population.items():
            share = statistics.fmean(kept[source]) if kept.get(source) else 0.0
            per_image = calls_per_image(rates[case], cfg.rounds, cfg.reformulate_share, verify_reformulations)
            size = sizes.get(source, StageSizes())
            for stage, calls in per_image.items():
                requests = images * share * calls
                engine_reply = size.mean_completion(stage)
                completion = {"low": engine_reply / 2, "expected": engine_reply, "high": float(max_tokens)}[case]
                prompt, completion = requests * size.mean_prompt(stage), requests * completion
                cost = pricing.cost(stage, prompt, completion)
                priced = priced and cost is not None
                row = stages.setdefault(stage, {"requests": 0.0, "prompt_tokens": 0.0, "completion_tokens": 0.0})
                row["requests"] += requests
                row["prompt_tokens"] += prompt
                row["completion_tokens"] += completion
                totals["requests"] += requests
                totals["prompt_tokens"] += prompt
                totals["completion_tokens"] += completion
                totals["cost_usd"] += cost or 0.0
        for key in ("requests", "prompt_tokens", "completion_tokens"):
            out[key][case] = round(totals[key])
        out["cost_usd"][case] = round(totals["cost_usd"], 2) if priced else None
        out["by_stage"][case] = {s: {k: round(v) for k, v in row.items()} for s, row in stages.items()}
    return out


def hours(projection: Mapping[str, Any], rpm: float, tpm: float, batch: bool, rounds: int) -> dict[str, float | None]:
    """Wall time: online, the slower of the request and token budgets (None without one); in batch mode, one
    batch per stage wave (the stages run one after another) of a stated duration each."""
    if batch:
        waves = 2 * rounds + 4  # generate, R+1 verify rounds, R complicate rounds, reformulate, verify_reformulated
        return {case: round(waves * BATCH_WAVE_HOURS[case], 2) for case in CASES}
    if not rpm and not tpm:
        return {case: None for case in CASES}
    out = {}
    for case in CASES:
        minutes = max(
            projection["requests"][case] / rpm if rpm else 0.0,
            (projection["prompt_tokens"][case] + projection["completion_tokens"][case]) / tpm if tpm else 0.0,
        )
        out[case] = round(minutes / 60, 4)
    return out


def picture_cost(model_of: Callable[[str], str], detail: str, flat: int) -> Callable[[str, int, int], int]:
    """Prompt tokens of a stage's picture on its model (the job's own formula)."""
    return lambda stage, width, height: image_tokens(model_of(stage), width, height, detail, flat)


def relative_error(predicted: float, measured: float) -> float:
    return abs(predicted - measured) / measured if measured else math.inf
