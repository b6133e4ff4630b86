"""Deduplication as composite PTransforms: within each image, then near-duplicates across images (decisions in
:mod:`comvint.dedup`)."""

from __future__ import annotations

from typing import Any, NamedTuple

import apache_beam as beam
import orjson

from comvint import dedup
from comvint.records import pack, unpack
from comvint.stages.base import OK, REJECTED
from comvint.stages.method import rejection

DROP, MEMBERS, CLUSTERS = "drop", "members", "clusters"


class Deduplicated(NamedTuple):
    kept: beam.PCollection
    rejected: beam.PCollection
    clusters: beam.PCollection  # (item id, its leader's id) of every within-image survivor


def _image_decisions(group: tuple[str, Any], threshold: float):
    _, members = group
    for item, reason, of in dedup.dedup_image(map(orjson.loads, members), threshold):
        yield beam.pvalue.TaggedOutput(DROP, (item["id"], (reason, of))) if reason else item


def band_tag(band: int) -> str:
    return f"band{band}"


class SketchFn(beam.DoFn):
    """Member tuple -> its packed sketch (band keys and member, :meth:`dedup.MinHasher.sketch`)."""

    def __init__(self, num_perm: int, bands: int) -> None:
        self._num_perm, self._bands = num_perm, bands
        self._hasher: dedup.MinHasher | None = None

    def setup(self) -> None:
        self._hasher = dedup.MinHasher(self._num_perm, self._bands)

    def process(self, member: dedup.Member):
        yield self._hasher.sketch(member)


def _band_entries(sketch: bytes, bands: list[int], after=()):
    """A sketch -> ``(shuffle key, packed entry)`` on the output of each of ``bands`` (``after``: the previous
    wave's barrier, an empty side input that only makes this step wait for it)."""
    for band, key, entry in dedup.band_entries(sketch, bands):
        yield beam.pvalue.TaggedOutput(band_tag(band), (key, entry))


def _split_exact(group: tuple[str, Any]):
    """Items of one text -> the head (for LSH), and ``(head id, (text, order keys))`` once per group."""
    head, keys = dedup.exact_groups(group[1])
    yield head
    yield beam.pvalue.TaggedOutput(MEMBERS, (head[2], (head[4], keys)))


class ConnectComponentsFn(beam.CombineFn):
    """Verified pairs ``(id, id)`` -> ``{id: smallest id of its connected component}`` (exact, any chain length).

    The accumulator is a union-find forest over the ids that have a near duplicate,
    so a worker holds those ids, never the items; duplicate edges (a pair found by
    several bands) cost nothing.
    """

    def create_accumulator(self) -> dict[str, str]:
        return {}

    def add_input(self, parent: dict[str, str], pair: tuple[str, str]) -> dict[str, str]:
        return dedup.union(parent, *pair)

    def merge_accumulators(self, parents) -> dict[str, str]:
        parents = iter(parents)
        merged = next(parents, {})
        for other in parents:
            dedup.merge_components(merged, other)
        return merged

    def extract_output(self, parent: dict[str, str]) -> dict[str, str]:
        return dedup.component_roots(parent)


def _component_of(joined: tuple[str, dict[str, list]]):
    """(head id, {label, member}) -> (component id, (text, order keys)) of the head's exact group."""
    _, parts = joined
    (label,) = parts["label"]
    (group,) = parts["member"]
    yield label, group


def _cluster_decisions(component: tuple[str, Any], keep: int, threshold: float):
    """A component's exact groups -> drops ``(id, (reason, leader))``, and ``(id, leader)`` of every item."""
    for item_id, reason, leader in dedup.cap_cluster(component[1], keep, threshold):
        if reason:
            yield item_id, (reason, leader)
        yield beam.pvalue.TaggedOutput(CLUSTERS, (item_id, leader))


def _packed(item: dict[str, Any]) -> tuple[str, bytes]:
    """Keyed by id and packed: the items wait, packed, for the whole of dedup."""
    return item["id"], pack(item)


def _apply(joined: tuple[str, dict[str, list]]):
    _, parts = joined
    (packed,) = parts["item"]
    item = unpack(packed)
    if not parts[DROP]:
        yield item
        return
    reason, of = min(parts[DROP], key=lambda d: (d[0] != dedup.EXACT, d[0] != dedup.NEAR, d))
    yield beam.pvalue.TaggedOutput(
        REJECTED, {**rejection(item, reason, "dedup", f"duplicate of {of}"), "duplicate_of": of}
    )


class DeduplicateInstructions(beam.PTransform):
    """Items carrying ``_unit`` (their canonical image) -> Deduplicated, duplicates rejected.

    Within an image: every pair compared exactly (GroupByKey on the image).
    Across images: exact-text groups (GroupByKey on the text), MinHash LSH over
    their heads (one GroupByKey per band, on its band keys; the bands in ``waves`` groups run one
    after another), verified pairs, connected components
    by union-find, then leaders within each component and at most ``max_per_cluster`` items per
    leader (GroupByKey on the component).
    """

    def __init__(
        self,
        max_per_cluster: int,
        threshold: float = dedup.THRESHOLD,
        num_perm: int = dedup.NUM_PERM,
        bands: int = dedup.BANDS,
        waves: int = 1,
    ) -> None:
        super().__init__()
        if max_per_cluster < 1 or not 0 < threshold <= 1:
            raise ValueError("need max_per_cluster >= 1 and 0 < threshold <= 1")
        self._keep, self._threshold, self._num_perm, self._bands = max_per_cluster, threshold, num_perm, bands
        self._waves = waves

    def expand(self, items) -> Deduplicated:
        threshold = self._threshold
        compact = items | "Compact" >> beam.Map(lambda it: dedup.compact(it, it["_unit"]))
        per_image = (
            compact
            | "KeyByImage" >> beam.Map(lambda c: (c["unit"], orjson.dumps(c)))  # one packed value per item
            | "GroupByImage" >> beam.GroupByKey()
            | "DedupWithinImage" >> beam.FlatMap(_image_decisions, threshold).with_outputs(DROP, main=OK)
        )
        exact = (
            per_image[OK]
            | "KeyByText" >> beam.Map(dedup.member)
            | "TextKey" >> beam.WithKeys(lambda m: m[4])
            | "GroupByText" >> beam.GroupByKey()
            | "SplitExactGroups" >> beam.FlatMap(_split_exact).with_outputs(MEMBERS, main=OK)
        )
        heads = exact[OK]
        labels = self._component_labels(heads, self._near_pairs(heads))
        across = (
            {"label": labels, "member": exact[MEMBERS]}
            | "JoinHeadLabels" >> beam.CoGroupByKey()
            | "ComponentGroups" >> beam.FlatMap(_component_of)
            | "GroupByComponent" >> beam.GroupByKey()
            | "CapClusters" >> beam.FlatMap(_cluster_decisions, self._keep, threshold).with_outputs(CLUSTERS, main=DROP)
        )
        drops = (per_image[DROP], across[DROP]) | "MergeDrops" >> beam.Flatten()
        out = (
            {"item": items | "KeyItems" >> beam.Map(_packed), DROP: drops}
            | "JoinDrops" >> beam.CoGroupByKey()
            | "Apply" >> beam.FlatMap(_apply).with_outputs(REJECTED, main=OK)
        )
        return Deduplicated(out[OK], out[REJECTED], across[CLUSTERS])

    def _near_pairs(self, heads: beam.PCollection) -> list[beam.PCollection]:
        """Verified near-duplicate pairs of the exact groups' heads: MinHash LSH, one GroupByKey per band.

        The bands are cut into waves: a wave's band keys are made only once the previous wave's pairs are all
        found, so a runner that holds every shuffle in memory (the local one) holds one wave's at a time."""
        threshold = self._threshold
        sketches = heads | "Sketch" >> beam.ParDo(SketchFn(self._num_perm, self._bands))
        pairs, after = [], []
        for w, wave in enumerate(dedup.band_waves(self._bands, self._waves)):
            tags = [band_tag(b) for b in wave]
            entries = sketches | f"BandKeys{w}" >> beam.FlatMap(_band_entries, wave, *after).with_outputs(*tags)
            found = [
                entries[band_tag(b)]
                | f"GroupByBand{b}" >> beam.GroupByKey()
                | f"VerifyBand{b}" >> beam.FlatMap(lambda kv: dedup.group_pairs(kv[1], threshold))
                for b in wave
            ]
            pairs += found
            done = tuple(found) | f"Wave{w}Done" >> beam.Flatten() | f"Wave{w}Barrier" >> beam.FlatMap(lambda _: ())
            after = [beam.pvalue.AsList(done)]
        return pairs

    @staticmethod
    def _component_labels(heads: beam.PCollection, pairs: list[beam.PCollection]) -> beam.PCollection:
        """(head id, the smallest id of its connected component): union-find over the pairs."""
        components = (
            tuple(pairs)
            | "MergeBandPairs" >> beam.Flatten()
            | "ConnectComponents" >> beam.CombineGlobally(ConnectComponentsFn())
            | "ComponentOf" >> beam.FlatMap(dict.items)
        )
        return (
            (heads | "OwnLabel" >> beam.Map(lambda m: (m[2], m[2])), components)
            | "MergeLabels" >> beam.Flatten()
            | "SmallestLabel" >> beam.CombinePerKey(min)
        )
