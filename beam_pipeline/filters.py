"""The quality filters as a composite PTransform (decisions in :mod:`comvint.filters`)."""

from __future__ import annotations

from typing import Any, NamedTuple

import apache_beam as beam

from comvint import filters
from comvint.stages.base import OK, REJECTED
from comvint.stages.method import rejection


class Screened(NamedTuple):
    kept: beam.PCollection
    rejected: beam.PCollection


def _filter(item: dict[str, Any], cfg: filters.FilterConfig):
    reason = filters.check(item, cfg)
    yield beam.pvalue.TaggedOutput(REJECTED, rejection(item, reason, "quality")) if reason else item


class FilterInstructions(beam.PTransform):
    """Instruction items -> Screened: items failing a quality filter go to rejected with its reason."""

    def __init__(self, cfg: filters.FilterConfig) -> None:
        super().__init__()
        self._cfg = cfg

    def expand(self, items) -> Screened:
        out = items | "CheckQuality" >> beam.FlatMap(_filter, self._cfg).with_outputs(REJECTED, main=OK)
        return Screened(out[OK], out[REJECTED])
