"""The short human-readable summary printed at the end of every run (from ``stats.json``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

FORMATS = ("open_ended", "bool", "multiple_choice")
TOP = 6


def _n(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], indent: str = "  ") -> list[str]:
    """A plain-text table: numeric columns right-aligned, text left-aligned."""
    numeric = [
        bool(rows) and all(not isinstance(r[i], str) or r[i] == "-" or r[i].startswith("$") for r in rows)
        for i in range(len(header))
    ]
    cells = [list(map(str, header))] + [[c if isinstance(c, str) else _n(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return [
        indent
        + "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric, strict=True)).rstrip()
        for row in cells
    ]


def _top(mapping: Mapping[str, int], n: int = TOP) -> str:
    items = sorted(mapping.items(), key=lambda kv: (-kv[1], kv[0]))
    text = ", ".join(f"{k} {_n(v)}" for k, v in items[:n])
    return text + (f", … ({len(items) - n} more)" if len(items) > n else "") if items else "none"


def _kept(counts: Mapping[str, Any]) -> list[str]:
    mix: dict[str, dict[str, int]] = {}
    for key, n in counts.get("instructions", {}).get("family+format+round", {}).items():
        family, fmt, _ = key.split(":")
        mix.setdefault(family, {}).setdefault(fmt, 0)
        mix[family][fmt] += n
    rows = [[family, *(parts.get(f, 0) for f in FORMATS), sum(parts.values())] for family, parts in sorted(mix.items())]
    return _table(["family", *FORMATS, "total"], rows) if rows else []


def _llm(llm: Mapping[str, Mapping[str, Any]], batch: bool) -> list[str]:
    rows = []
    pictures = any(u.get("images") for u in llm.values())
    for stage, u in sorted(llm.items()):
        cost = u.get("cost")
        sent = [u.get("batches", 0), u.get("batch_lines", 0)] if batch else [u.get("requests", 0)]
        rows.append(
            [
                stage,
                u.get("calls", 0),
                u.get("cache_hits", 0),
                *sent,
                sum(u.get("retries", {}).values()),
                u.get("failures", 0),
                *([u.get("images", 0)] if pictures else []),
                u.get("prompt_tokens", 0),
                u.get("completion_tokens", 0),
                "-" if cost is None else f"${cost:,.4f}" if cost < 1 else f"${cost:,.2f}",
            ]
        )
    sent_heads = ["batches", "batch lines"] if batch else ["requests"]
    return _table(
        [
            "stage",
            "calls",
            "cache hits",
            *sent_heads,
            "retries",
            "failed",
            *(["pictures"] if pictures else []),
            "tokens in",
            "tokens out",
            "est. cost",
        ],
        rows,
    )


def format_summary(stats: Mapping[str, Any], outputs: Sequence[tuple[str, str]], wall_s: float) -> str:
    """The end-of-run summary: inputs, kept, rejected, failed, LLM use, wall time and where outputs went."""
    counts, acct = stats.get("counts", {}), stats.get("accounting", {})
    kept, rejected, failed = (counts.get(k, {}) for k in ("instructions", "rejected", "failures"))
    holds = acct.get("identity_holds") and acct.get("items", {}).get("identity_holds", True)
    lines = [
        f"ComVint run finished in {wall_s:,.1f} s ({stats.get('llm_backend') or 'no'} LLM backend, stages: "
        f"{stats.get('stages')})",
        f"Inputs           {_n(acct.get('inputs', 0))} images and files; accounting identity "
        + ("holds" if holds else "BROKEN"),
        f"Kept             {_n(kept.get('total', 0))} instructions",
        *_kept(counts),
        f"Rejected         {_n(rejected.get('total', 0))}: by stage {_top(rejected.get('stage', {}))}",
        f"  top reasons    {_top(rejected.get('reason', {}))}",
        f"Failures         {_n(failed.get('total', 0))}: {_top(failed.get('reason', {}))}",
    ]
    if stats.get("llm"):
        batch = stats.get("llm_mode") == "batch"
        lines += ["LLM use" + (" (Batch API; costs with its discount)" if batch else ""), *_llm(stats["llm"], batch)]
    lines += ["Outputs", *_table(["what", "where"], outputs)]
    return "\n".join(lines)
