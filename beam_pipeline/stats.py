"""SummarizeRun: counts of every sink, the accounting identity, and stats.json."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import apache_beam as beam

from beam_pipeline import io
from comvint import stats as run_stats


class SummarizeRun(beam.PTransform):
    """Count every sink, check that each input unit reached one, write ``stats.json``.

    Input: a dict ``{"inputs": units, <sink name>: records, ...}`` where
    ``units`` are accounting keys of the inputs; optional ``"llm"`` holds usage
    dicts; names in ``COUNT_ONLY`` are counted but are not sinks.  Output: the stats dict (one element); the run fails with
    :class:`~comvint.stats.AccountingError` when an input is unaccounted for.
    """

    def __init__(self, output: str, extra: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self._path, self._extra = io.join(output, "stats.json"), dict(extra or {})

    def expand(self, pcolls: dict[str, beam.PCollection]):
        inputs, llm = pcolls["inputs"], pcolls.get("llm")
        tallied = {k: v for k, v in pcolls.items() if k not in ("inputs", "llm")}
        sinks = {k: v for k, v in tallied.items() if k not in run_stats.COUNT_ONLY}
        counts = [
            records | f"Count{name.title()}" >> beam.FlatMap(run_stats.stat_keys_of(name))
            for name, records in sorted(tallied.items())
        ]
        counted = (
            counts
            | "FlattenCounts" >> beam.Flatten()
            | "CountKeys" >> beam.combiners.Count.PerElement()
            | "ListCounts" >> beam.combiners.ToList()
        )
        outputs = [records | f"Units{name.title()}" >> beam.Map(run_stats.unit_of) for name, records in sorted(sinks.items())]
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
        path, extra = self._path, self._extra
        return (
            inputs.pipeline
            | "Once" >> beam.Create([None])
            | "WriteStats" >> beam.Map(
                _finish,
                path,
                extra,
                beam.pvalue.AsSingleton(counted),
                beam.pvalue.AsSingleton(unaccounted),
                beam.pvalue.AsSingleton(n_inputs),
                beam.pvalue.AsSingleton(usage),
            )
        )


def _finish(_, path, extra, counts, unaccounted, n_inputs, usage) -> dict[str, Any]:
    nested = run_stats.nest_counts(counts)
    stats = {
        **extra,
        "counts": nested,
        "rates": run_stats.rates(nested),
        "accounting": run_stats.accounting(n_inputs, unaccounted),
        "llm": usage,
    }
    io.write_json(path, stats)
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
