"""``report.html``: the run's figures as charts and its sample as a browser, in one offline file.

:func:`page_data` turns ``stats.json`` and the sample entries into what the page
draws; :func:`render` embeds that data, the stylesheet and the script into the
HTML template. No network is needed to view the page: a Content-Security-Policy
forbids every request, and images are embedded as data URIs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import pathlib
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from comvint.records import stable_int

ASSETS = pathlib.Path(__file__).parent / "assets"
CARDS_PER_OUTCOME = 300
TOP_REASONS = 20
_ROUND = re.compile(r"_(\d+)$")
STEP_ORDER = (
    "images",
    "images_used",
    "synthesized",
    "rounds",
    "reformulated",
    "verified_reformulated",
    "after_filters",
    "after_dedup",
)
STEP_LABELS = {
    "images": "images read",
    "images_used": "images used",
    "synthesized": "synthesized",
    "reformulated": "reformulated (Bool + MC)",
    "verified_reformulated": "reformulations verified",
    "after_filters": "after quality filters",
    "after_dedup": "kept (after dedup)",
}


def _step_rank(step: str) -> tuple[int, int, int]:
    """Funnel order; the rounds interleave as verified 0, complicated 1, verified 1, ..."""
    match = _ROUND.search(step)
    if match and step.startswith(("verified", "complicated")):
        return STEP_ORDER.index("rounds"), int(match.group(1)), 0 if step.startswith("complicated") else 1
    return (STEP_ORDER.index(step) if step in STEP_ORDER else len(STEP_ORDER)), 0, 0


def step_label(step: str) -> str:
    match = _ROUND.search(step)
    if match and step.startswith(("verified", "complicated")):
        return f"{step.split('_')[0]}, round {match.group(1)}"
    return STEP_LABELS.get(step, step.replace("_", " "))


def funnel(counts: Mapping[str, Any]) -> list[list[Any]]:
    steps = counts.get("funnel", {}).get("step", {})
    return [[step_label(s), steps[s]] for s in sorted(steps, key=_step_rank)]


def _top(mapping: Mapping[str, int], n: int = TOP_REASONS) -> list[list[Any]]:
    return [[k, v] for k, v in sorted(mapping.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def _mix(counts: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Family x round rows, one stacked part per format."""
    rows: dict[str, dict[str, int]] = {}
    for key, n in counts.get("instructions", {}).get("family+format+round", {}).items():
        family, fmt, round_no = key.split(":")
        rows.setdefault(f"{family}, round {round_no}", {})[fmt] = n
    keys = [k for k in ("open_ended", "bool", "multiple_choice") if any(k in r for r in rows.values())]
    return [{"label": label, "parts": parts} for label, parts in sorted(rows.items())], keys


def charts(stats: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every chart the page draws, as rows of (label, value); charts with no data are left out."""
    counts, rates = stats.get("counts", {}), stats.get("rates", {})
    instr = counts.get("instructions", {})
    passes = [[f"round {r}", v] for r, v in sorted(rates.get("verification_pass_rate", {}).items()) if v is not None]
    mix_rows, mix_keys = _mix(counts)
    letters = "ABCDEFGH"
    out = [
        {"id": "funnel", "title": "Funnel: images to kept instructions", "kind": "bars", "rows": funnel(counts)},
        {
            "id": "rejections",
            "title": "Rejected, by stage and reason",
            "kind": "bars",
            "rows": _top(counts.get("rejected", {}).get("stage+reason", {})),
        },
        {
            "id": "failures",
            "title": "Failures, by stage and reason",
            "kind": "bars",
            "rows": _top(counts.get("failures", {}).get("stage+reason", {})),
        },
        {"id": "pass_rate", "title": "Verification pass rate per round", "kind": "bars", "rows": passes, "max": 1},
        {
            "id": "mix",
            "title": "Kept instructions: family x round, by format",
            "kind": "stacked",
            "rows": mix_rows,
            "keys": mix_keys,
        },
        {
            "id": "positions",
            "title": "Multiple-choice answer positions",
            "kind": "bars",
            "rows": [[letters[int(p)], n] for p, n in sorted(instr.get("answer_index", {}).items())],
        },
        {
            "id": "knowledge_types",
            "title": "Knowledge type of complications",
            "kind": "bars",
            "rows": _top(instr.get("knowledge_type", {})),
        },
        {
            "id": "topics",
            "title": "Knowledge topics (outside knowledge)",
            "kind": "bars",
            "rows": _top(instr.get("knowledge_topic", {}), 15),
        },
    ]
    return [c for c in out if c["rows"]]


def llm_rows(stats: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per LLM stage: calls, cache hits, requests, refusals, retries, tokens, cost, latency (and in batch
    mode the batches and their lines)."""
    rows = []
    for stage, usage in sorted(stats.get("llm", {}).items()):
        retries = usage.get("retries", {})
        requests = usage.get("requests", 0)
        rows.append(
            {
                "stage": stage,
                "calls": usage.get("calls", 0),
                "cache_hits": usage.get("cache_hits", 0),
                "requests": requests,
                "refusals": retries.get("rate_limited", 0),
                "retries": sum(retries.values()),
                "failures": usage.get("failures", 0),
                "prompt_tokens": usage.get("prompt_tokens", 0),
                "completion_tokens": usage.get("completion_tokens", 0),
                "cost": usage.get("cost"),
                "mean_latency_ms": round(usage.get("latency_ms", 0) / requests, 1) if requests else None,
                "latency_histogram": usage.get("latency_histogram", {}),
                **(
                    {"batches": usage.get("batches", 0), "batch_lines": usage.get("batch_lines", 0)}
                    if stats.get("llm_mode") == "batch"
                    else {}
                ),
            }
        )
    return rows


def outcome_key(card: Mapping[str, Any]) -> str:
    return card["outcome"] if card["outcome"] == "kept" else f"{card['outcome']}: {card.get('reason', '?')}"


def cap_cards(entries: Iterable[Mapping[str, Any]], per_outcome: int = CARDS_PER_OUTCOME) -> set[str]:
    """Ids of the cards shown: at most ``per_outcome`` per outcome, chosen by a hash of the id."""
    ranked = sorted((outcome_key(c), stable_int("card", c["id"]), c["id"]) for e in entries for c in e["records"])
    shown, per = set(), Counter()
    for key, _, card_id in ranked:
        if per[key] < per_outcome:
            per[key] += 1
            shown.add(card_id)
    return shown


def page_data(
    stats: Mapping[str, Any], entries: list[Mapping[str, Any]], pictures: Mapping[str, str], source: str
) -> dict[str, Any]:
    """Everything the page shows (bounded in size by the sample, not by the dataset)."""
    shown = cap_cards(entries)
    images = []
    for e in sorted(entries, key=lambda e: e["unit"]):
        records = [{**c, "card": c["id"] in shown} for c in e["records"]]
        images.append(
            {**{k: v for k, v in e.items() if k != "records"}, "picture": pictures.get(e["unit"]), "records": records}
        )
    accounting = stats.get("accounting", {})
    counts = stats.get("counts", {})
    return {
        "source": source,
        "overview": {
            "backend": stats.get("llm_backend"),
            "mode": stats.get("llm_mode"),
            "stages": stats.get("stages"),
            "inputs": accounting.get("inputs"),
            "identity_holds": accounting.get("identity_holds"),
            "items_identity_holds": accounting.get("items", {}).get("identity_holds"),
            "kept": counts.get("instructions", {}).get("total", 0),
            "rejected": counts.get("rejected", {}).get("total", 0),
            "failed": counts.get("failures", {}).get("total", 0),
            "cost": _total_cost(stats.get("llm", {})),
        },
        "charts": charts(stats),
        "llm": llm_rows(stats),
        "images": images,
    }


def _total_cost(llm: Mapping[str, Mapping[str, Any]]) -> float | None:
    costs = [u["cost"] for u in llm.values() if "cost" in u]
    return sum(costs) if costs else None


def _script_json(value: Any) -> str:
    """JSON safe inside a ``<script>`` element: every ``<`` (and ``>``, ``&``) as a JSON escape, so no ``</script>``
    or ``<!--`` in a caption or a reply can end or bend the element, and the text stays valid JSON."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def script_hash(script: str) -> str:
    """The CSP source that allows exactly this inline script (and no injected one)."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii") + "'"


def render(data: Mapping[str, Any]) -> str:
    """The self-contained HTML page."""
    template = (ASSETS / "report.html").read_text(encoding="utf-8")
    script = (ASSETS / "report.js").read_text(encoding="utf-8")
    return (
        template.replace("/*STYLE*/", (ASSETS / "report.css").read_text(encoding="utf-8"))
        .replace("__SCRIPT_HASH__", script_hash(script))
        .replace("/*SCRIPT*/", script)
        .replace("__DATA__", _script_json(data))
    )
