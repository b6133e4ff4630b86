"""SummarizeRun: counts of every sink, the accounting identity, and stats.json."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import apache_beam as beam

from beam_pipeline.files import join, write_json
from comvint import stats as run_stats


class SummarizeRun(beam.PTransform):
    """Count every sink, check that each input unit reached one, write ``stats.json``.

    Input: a dict ``{"inputs": units, <sink name>: records, ...}`` where
    ``units`` are accounting keys of the inputs; optional ``"llm"`` holds usage
    dicts and optional ``"items"`` the id of every item a stage created (then each
    must end in exactly one of instructions, rejected, failures); names in
    ``COUNT_ONLY`` are counted but are not sinks.  Output: the stats dict (one
    element), after ``stats.json`` is written; the run fails with
    :class:`~comvint.stats.AccountingError` when an input or item is unaccounted for.
    """

    def __init__(self, output: str, extra: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self._path, self._extra = join(output, "stats.json"), dict(extra or {})

    def expand(self, pcolls: dict[str, beam.PCollection]):
        inputs, llm, items = pcolls["inputs"], pcolls.get("llm"), pcolls.get("items")
        tallied = {k: v for k, v in pcolls.items() if k not in ("inputs", "llm", "items")}
        sinks = {k: v for k, v in tallied.items() if k not in run_stats.COUNT_ONLY}
        # Counted per sink before the Flatten, whose inputs the local runner holds whole: a few thousand
        # (key, count) pairs cross it instead of every record's keys.
        counts = [
            records
            | f"Count{name.title()}" >> beam.FlatMap(run_stats.stat_keys_of(name))
            | f"Tally{name.title()}" >> beam.combiners.Count.PerElement()
            for name, records in sorted(tallied.items())
        ]
        counted = (
            counts
            | "FlattenCounts" >> beam.Flatten()
            | "CountKeys" >> beam.CombinePerKey(sum)
            | "ListCounts" >> beam.combiners.ToList()
        )
        outputs = [
            records | f"Units{name.title()}" >> beam.Map(run_stats.unit_of) for name, records in sorted(sinks.items())
        ]
        unaccounted = (
            {
                "in": inputs | "KeyInputs" >> beam.Map(lambda u: (u, None)),
                "out": outputs | "FlattenUnits" >> beam.Flatten() | "KeyOutputs" >> beam.Map(lambda u: (u, None)),
            }
            | "MatchUnits" >> beam.CoGroupByKey()
            | "Unaccounted" >> beam.FlatMap(lambda kv: [kv[0]] if kv[1]["in"] and not kv[1]["out"] else [])
            | "ListUnaccounted" >> beam.combiners.ToList()
        )
        n_inputs = inputs | "CountInputs" >> beam.combiners.Count.Globally()
        usage = (
            llm | "SumUsage" >> beam.CombineGlobally(SumUsageFn())
            if llm is not None
            else inputs.pipeline | "NoUsage" >> beam.Create([{}])
        )
        item_check = (
            _check_items(items, sinks) if items is not None else inputs.pipeline | "NoItems" >> beam.Create([None])
        )
        path, extra = self._path, self._extra
        return (
            inputs.pipeline
            | "Once" >> beam.Create([None])
            | "WriteStats"
            >> beam.Map(
                _finish,
                path,
                extra,
                beam.pvalue.AsSingleton(counted),
                beam.pvalue.AsSingleton(unaccounted),
                beam.pvalue.AsSingleton(n_inputs),
                beam.pvalue.AsSingleton(usage),
                beam.pvalue.AsSingleton(item_check),
            )
        )


def _check_items(items, sinks: dict[str, beam.PCollection]):
    """The per-item identity: each created id against the outputs that end it -> one section of stats.json."""
    ends = [
        sinks[name] | f"ItemEnds{name.title()}" >> beam.FlatMap(lambda r, sink=name: run_stats.item_ends(sink, r))
        for name in run_stats.ITEM_SINKS
        if name in sinks
    ]
    problems = (
        {
            "created": items | "KeyCreated" >> beam.Map(lambda i: (i, None)),
            "end": ends | "FlattenEnds" >> beam.Flatten(),
        }
        | "MatchItems" >> beam.CoGroupByKey()
        | "ItemProblems" >> beam.FlatMap(_item_problem)
    )
    counts = problems | "CountProblems" >> beam.combiners.Count.PerKey() | "ListProblems" >> beam.combiners.ToList()
    examples = (
        problems | "ProblemExamples" >> beam.combiners.Top.SmallestPerKey(5) | "ListExamples" >> beam.combiners.ToList()
    )
    created = items | "CountCreated" >> beam.combiners.Count.Globally()
    return created | "ItemAccounting" >> beam.Map(
        run_stats.item_accounting, beam.pvalue.AsSingleton(counts), beam.pvalue.AsSingleton(examples)
    )


def _item_problem(joined: tuple[str, dict[str, list]]):
    item_id, parts = joined
    problem = run_stats.item_problem(bool(parts["created"]), list(parts["end"]))
    if problem:
        yield problem, item_id


def _finish(_, path, extra, counts, unaccounted, n_inputs, usage, items) -> dict[str, Any]:
    nested = run_stats.nest_counts(counts)
    accounting = run_stats.accounting(n_inputs, unaccounted)
    stats = {
        **extra,
        "counts": nested,
        "rates": run_stats.rates(nested),
        "accounting": {**accounting, "items": items} if items is not None else accounting,
        "llm": usage,
    }
    write_json(path, stats)
    run_stats.check_accounting(stats)
    return stats


class SumUsageFn(beam.CombineFn):
    """Sum dicts of numbers (nested one level), e.g. per-stage token usage."""

    def create_accumulator(self) -> dict:
        return {}

    def add_input(self, acc: dict, usage: dict) -> dict:
        return run_stats.add_usage(acc, usage)

    def merge_accumulators(self, accs) -> dict:
        total: dict = {}
        for acc in accs:
            total = run_stats.add_usage(total, acc)
        return total

    def extract_output(self, acc: dict) -> dict:
        return acc
