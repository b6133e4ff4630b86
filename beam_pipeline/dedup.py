"""Deduplication and quality filters as composite PTransforms (decisions live in comvint)."""

from __future__ import annotations

from typing import Any, NamedTuple

import apache_beam as beam

from comvint import dedup, filters
from comvint.stages.base import OK, REJECTED
from comvint.stages.method import rejection

DROP = "drop"


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


def _image_decisions(group: tuple[str, Any], threshold: float):
    _, members = group
    for item, reason, of in dedup.dedup_image(members, threshold):
        yield beam.pvalue.TaggedOutput(DROP, (item["id"], (reason, of))) if reason else item


class BandKeysFn(beam.DoFn):
    """Compact item -> ``(band key, item)`` for each LSH band of its MinHash signature."""

    def __init__(self, num_perm: int, bands: int) -> None:
        self._num_perm, self._bands = num_perm, bands
        self._hasher: dedup.MinHasher | None = None

    def setup(self) -> None:
        self._hasher = dedup.MinHasher(self._num_perm, self._bands)

    def process(self, item: dict[str, Any]):
        signature = self._hasher.signature(dedup.shingles(item["text"]))
        for key in self._hasher.band_keys(signature):
            yield key, item


def _cluster_of(joined: tuple[str, dict[str, list]]) -> tuple[str, dict[str, Any]]:
    """(id, {item, links}) -> (cluster id, item): the smallest-ordered item it matched, or itself."""
    _, parts = joined
    (item,) = parts["item"]
    return min([dedup.order_key(item), *parts["links"]])[2], item


def _cluster_decisions(group: tuple[str, Any], keep: int):
    for item, reason, of in dedup.cap_cluster(group[1], keep):
        if reason:
            yield item["id"], (reason, of)


def _apply(joined: tuple[str, dict[str, list]]):
    _, parts = joined
    (item,) = parts["item"]
    if not parts[DROP]:
        yield item
        return
    reason, of = min(parts[DROP], key=lambda d: (d[0] != dedup.EXACT, d[0] != dedup.NEAR, d))
    yield beam.pvalue.TaggedOutput(REJECTED, {**rejection(item, reason, "dedup", f"duplicate of {of}"), "duplicate_of": of})


class DeduplicateInstructions(beam.PTransform):
    """Items carrying ``_unit`` (their canonical image) -> Screened, duplicates rejected.

    Within an image: every pair compared exactly (GroupByKey on the image).
    Across images: MinHash LSH, one GroupByKey on band keys, then at most
    ``max_per_cluster`` items per near-duplicate cluster (GroupByKey on the cluster).
    """

    def __init__(self, max_per_cluster: int, threshold: float = dedup.THRESHOLD,
                 num_perm: int = dedup.NUM_PERM, bands: int = dedup.BANDS) -> None:
        super().__init__()
        if max_per_cluster < 1 or not 0 < threshold <= 1:
            raise ValueError("need max_per_cluster >= 1 and 0 < threshold <= 1")
        self._keep, self._threshold, self._num_perm, self._bands = max_per_cluster, threshold, num_perm, bands

    def expand(self, items) -> Screened:
        threshold = self._threshold
        compact = items | "Compact" >> beam.Map(lambda it: dedup.compact(it, it["_unit"]))
        per_image = (
            compact
            | "KeyByImage" >> beam.Map(lambda c: (c["unit"], c))
            | "GroupByImage" >> beam.GroupByKey()
            | "DedupWithinImage" >> beam.FlatMap(_image_decisions, threshold).with_outputs(DROP, main=OK)
        )
        survivors = per_image[OK]
        links = (
            survivors
            | "BandKeys" >> beam.ParDo(BandKeysFn(self._num_perm, self._bands))
            | "GroupByBand" >> beam.GroupByKey()
            | "LinkInBucket" >> beam.FlatMap(lambda kv: dedup.bucket_links(kv[1], threshold))
        )
        across = (
            {"item": survivors | "KeyById" >> beam.Map(lambda c: (c["id"], c)), "links": links}
            | "JoinLinks" >> beam.CoGroupByKey()
            | "ClusterOf" >> beam.Map(_cluster_of)
            | "GroupByCluster" >> beam.GroupByKey()
            | "CapClusters" >> beam.FlatMap(_cluster_decisions, self._keep)
        )
        drops = (per_image[DROP], across) | "MergeDrops" >> beam.Flatten()
        out = (
            {"item": items | "KeyItems" >> beam.Map(lambda it: (it["id"], it)), DROP: drops}
            | "JoinDrops" >> beam.CoGroupByKey()
            | "Apply" >> beam.FlatMap(_apply).with_outputs(REJECTED, main=OK)
        )
        return Screened(out[OK], out[REJECTED])
