"""Run statistics: which counters an output record feeds, and the accounting identity."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from comvint.records import Failure, image_key

# The fields of each sink's records that stats.json breaks counts down by; a tuple of fields is
# one joint dimension, named ``a+b`` with values ``va:vb`` (e.g. ``stage+reason`` -> ``verify:verify_rejected``).
DIMENSIONS: dict[str, tuple[str | tuple[str, ...], ...]] = {
    "annotations": ("source",),
    "instructions": (
        "source",
        "family",
        "format",
        "round",
        "knowledge_type",
        "knowledge_topic",
        "answer_index",
        ("family", "format", "round"),
    ),
    "rejected": ("stage", "reason", "family", "format", "round", ("stage", "reason")),
    "failures": ("stage", "reason", "source", ("stage", "reason")),
    "verdicts": ("round_verdict",),
    "funnel": ("step",),
    "skipped": ("stage", "reason"),
    "clipped_boxes": ("source",),
}
# Counted for stats.json, but not outputs that account for an input.
COUNT_ONLY = ("verdicts", "funnel", "skipped", "clipped_boxes")
DUPLICATE_REASONS = ("duplicate_exact", "duplicate_near", "template_repeat")


# A failure of these stages is the end of the item they were given (a judge that could not judge it);
# a failure of the other stages is about an item they failed to make (its parent ends elsewhere).
ITEM_END_STAGES = frozenset({"verify", "verify_reformulated"})
ITEM_SINKS = ("instructions", "rejected", "failures")


class AccountingError(RuntimeError):
    """Some input images, or items a stage created, ended in no output (or in two)."""


def stat_keys(sink: str, record: Any) -> list[str]:
    """The counter keys (``sink/total``, ``sink/<field>/<value>``) one record increments."""
    fields = record.to_dict() if isinstance(record, Failure) else record
    keys = [f"{sink}/total"]
    for dim in DIMENSIONS.get(sink, ()):
        names = dim if isinstance(dim, tuple) else (dim,)
        values = [fields.get(name) for name in names]
        if all(v is not None for v in values):
            keys.append(f"{sink}/{'+'.join(names)}/{':'.join(map(str, values))}")
    return keys


def unit_of(record: Any) -> str:
    """The accounting unit (an input image, or a damaged file) a record belongs to."""
    if isinstance(record, Failure):
        return record.unit_key()
    return image_key(record["source"], record["image_id"])


def item_ends(sink: str, record: Any) -> list[tuple[str, str]]:
    """``(item id, sink)`` when this output record is where an item some stage created ended."""
    if isinstance(record, Failure):
        return [(record.item_id, sink)] if record.item_id and record.stage in ITEM_END_STAGES else []
    return [(record["id"], sink)] if record.get("id") else []


def item_problem(created: bool, ends: list[str]) -> str | None:
    """What is wrong with one item id's ends: ``missing``, ``in_two_places``, ``never_created`` (or None)."""
    if not created:
        return "never_created"
    if not ends:
        return "missing"
    return "in_two_places" if len(ends) > 1 else None


def item_accounting(
    created: int, problems: list[tuple[str, int]], examples: list[tuple[str, list[str]]]
) -> dict[str, Any]:
    """The per-item identity's section of stats.json: every created item ends in exactly one sink."""
    counts = dict(problems)
    return {
        "created": created,
        **{p: counts.get(p, 0) for p in ("missing", "in_two_places", "never_created")},
        "examples": {p: sorted(ids) for p, ids in sorted(examples)},
        "identity_holds": not counts,
    }


def nest_counts(counts: Iterable[tuple[str, int]]) -> dict[str, Any]:
    """Turn ``{"a/b/c": n}`` counter keys into nested dicts, sorted for stable output."""
    nested: dict[str, Any] = {}
    for key, count in sorted(counts):
        *path, leaf = key.split("/", 2)
        node = nested
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = node.get(leaf, 0) + count
    return nested


def accounting(inputs: int, unaccounted: list[str]) -> dict[str, Any]:
    """The accounting identity's section of stats.json."""
    return {
        "inputs": inputs,
        "accounted": inputs - len(unaccounted),
        "unaccounted": len(unaccounted),
        "unaccounted_examples": sorted(unaccounted)[:20],
        "identity_holds": not unaccounted,
    }


def check_accounting(stats: Mapping[str, Any]) -> None:
    """Raise :class:`AccountingError` unless every input unit and every created item is accounted for."""
    section = stats["accounting"]
    if not section["identity_holds"]:
        raise AccountingError(
            f"{section['unaccounted']} of {section['inputs']} inputs ended in no output "
            f"(e.g. {section['unaccounted_examples'][:5]})"
        )
    items = section.get("items")
    if items and not items["identity_holds"]:
        raise AccountingError(
            f"of {items['created']} items created, {items['missing']} ended in no output, {items['in_two_places']} "
            f"in two places, and {items['never_created']} outputs name an item no stage created (e.g. "
            f"{items['examples']})"
        )


def stat_keys_of(sink: str):
    """A picklable one-argument function giving :func:`stat_keys` for ``sink``."""
    return _StatKeys(sink)


class _StatKeys:
    def __init__(self, sink: str) -> None:
        self.sink = sink

    def __call__(self, record: Any) -> list[str]:
        return stat_keys(self.sink, record)


def add_usage(total: dict, usage: Mapping[str, Any]) -> dict:
    """Add a usage dict (numbers, or dicts of numbers) into ``total`` and return it."""
    for key, value in usage.items():
        if isinstance(value, Mapping):
            total[key] = add_usage(dict(total.get(key, {})), value)
        else:
            total[key] = total.get(key, 0) + value
    return total


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def rates(counts: Mapping[str, Any]) -> dict[str, Any]:
    """Derived figures: verification pass rate per round, duplicate and filter rates, answer positions."""
    per_round: dict[str, dict[str, int]] = {}
    for key, n in counts.get("verdicts", {}).get("round_verdict", {}).items():
        round_no, verdict = key.split(":")
        per_round.setdefault(round_no, {})[verdict] = n
    kept = counts.get("instructions", {}).get("total", 0)
    reasons = counts.get("rejected", {}).get("reason", {})
    removed = {r: reasons.get(r, 0) for r in DUPLICATE_REASONS}
    filtered = counts.get("rejected", {}).get("stage", {}).get("quality", 0)
    screened = kept + sum(removed.values()) + filtered
    positions = counts.get("instructions", {}).get("answer_index", {})
    return {
        "verification_pass_rate": {
            r: _share(v.get("passed", 0), v.get("passed", 0) + v.get("failed", 0)) for r, v in sorted(per_round.items())
        },
        "duplicate_rate": {r: _share(n, screened) for r, n in removed.items()}
        | {"total": _share(sum(removed.values()), screened)},
        "quality_filter_rate": _share(filtered, screened),
        "answer_position_share": {p: _share(n, sum(positions.values())) for p, n in sorted(positions.items())},
    }
