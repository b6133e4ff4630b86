"""Reading the annotation sources: Flickr30k Entities trees and Visual Genome files, as PTransforms.

Every reader returns a :class:`Read` pair ``(records, failures)``; failures are
:class:`~comvint.records.Failure` objects, never dropped.
"""

from __future__ import annotations

import json
import logging
import posixpath
from collections.abc import Iterator
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_pipeline.files import exists, file_stem, inside, join, read_bytes, read_text
from comvint.readers import flickr30k, visual_genome
from comvint.records import (
    FLICKR,
    Failure,
    InputError,
    pack,
    unpack,
)

_LOGGER = logging.getLogger(__name__)


OK, FAILED = "ok", "failed"


XML_REASONS = frozenset(
    {"ingest_malformed_xml", "ingest_missing_size", "ingest_bad_size", "ingest_bad_box", "ingest_box_outside_image"}
)


class Read(NamedTuple):
    records: beam.PCollection
    failures: beam.PCollection


def resolve_split(flickr_root: str, split: str | None) -> frozenset[str] | None:
    """Image ids of a split: ``train``/``val``/``test`` under the root, or a file of ids."""
    if not split:
        return None
    path = join(flickr_root, f"{split}.txt") if split in ("train", "val", "test") else split
    return flickr30k.parse_split(read_text(path))


def resolve_unrelated(flickr_root: str, path: str | None, keep: bool) -> frozenset[tuple[str, int]]:
    """The (image id, sentence number) pairs to drop; empty when kept or absent."""
    if keep:
        return frozenset()
    path = path or join(flickr_root, "UNRELATED_CAPTIONS")
    if not exists(path):
        _LOGGER.info("No UNRELATED_CAPTIONS at %s: no caption is dropped", path)
        return frozenset()
    return flickr30k.parse_unrelated_captions(read_text(path))


class ParseFlickrImageFn(beam.DoFn):
    """(image_id, {"sentences": [path], "xml": [path]}) -> record | TaggedOutput(FAILED, Failure)."""

    def __init__(self, unrelated: frozenset[tuple[str, int]], root: str = "") -> None:
        self._unrelated, self._root = unrelated, root
        self._failed = Metrics.counter("comvint.ingest", "flickr_failed")

    def process(self, element: tuple[str, dict[str, list[str]]]) -> Iterator[Any]:
        image_id, paths = element
        sentences, xmls = sorted(paths["sentences"]), sorted(paths["xml"])
        try:
            if not xmls:
                raise InputError("ingest_missing_xml", "a Sentences file without its Annotations XML")
            if not sentences:
                raise InputError("ingest_missing_sentences", "an Annotations XML without its Sentences file")
            for path in (sentences[0], xmls[0]):
                if self._root and not inside(self._root, path):  # a link out of the tree: never read, never sent
                    raise InputError("ingest_outside_tree", f"{path} resolves outside {self._root}")
            yield flickr30k.build_record(image_id, read_bytes(sentences[0]), read_bytes(xmls[0]), self._unrelated)
        except InputError as err:
            self._failed.inc()
            path = (xmls or sentences)[0] if err.reason in XML_REASONS or not sentences else sentences[0]
            yield beam.pvalue.TaggedOutput(
                FAILED, Failure("ingest", err.reason, FLICKR, image_id=image_id, path=path, detail=err.detail)
            )


class LimitImages(beam.PTransform):
    """Keep the ``n`` smallest keys of ``(image_id, value)`` pairs (all when ``n`` is 0)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self._n = n

    def expand(self, pairs):
        if not self._n:
            return pairs
        return (
            pairs
            | "SmallestIds" >> beam.combiners.Top.Of(self._n, key=lambda kv: id_order(kv[0]), reverse=True)
            | "Unpack" >> beam.FlatMap(lambda kvs: kvs)
        )


def id_order(image_id: str) -> tuple[int, str]:
    return (int(image_id), "") if image_id.isdigit() else (1 << 62, image_id)


class ReadFlickr30k(beam.PTransform):
    """Flickr30k Entities tree -> Read(records, failures), one record per image id."""

    def __init__(
        self,
        root: str,
        split: frozenset[str] | None = None,
        unrelated: frozenset[tuple[str, int]] = frozenset(),
        limit: int = 0,
    ) -> None:
        super().__init__()
        self._root, self._split, self._unrelated, self._limit = root, split, unrelated, limit

    def expand(self, pbegin) -> Read:
        split = self._split  # a local, so the lambda below does not pickle self
        sentences = (
            pbegin
            | "MatchSentences" >> fileio.MatchFiles(join(self._root, "Sentences", "*.txt"))
            | "KeySentences" >> beam.Map(lambda m: (file_stem(m.path), m.path))
        )
        xmls = (
            pbegin
            | "MatchXml" >> fileio.MatchFiles(join(self._root, "Annotations", "*.xml"))
            | "KeyXml" >> beam.Map(lambda m: (file_stem(m.path), m.path))
        )
        results = (
            {"sentences": sentences, "xml": xmls}
            | "PairFiles" >> beam.CoGroupByKey()
            | "KeepSplit" >> beam.Filter(lambda kv: split is None or kv[0] in split)
        )
        if self._limit:  # the limit's top-N is one list on one worker: spread its images again (the pairing did)
            results = results | "Limit" >> LimitImages(self._limit) | "SpreadImages" >> beam.Reshuffle()
        results = results | "ParseFlickr" >> beam.ParDo(ParseFlickrImageFn(self._unrelated, self._root)).with_outputs(
            FAILED, main=OK
        )
        return Read(results[OK], results[FAILED])


class ReadRegionRangeFn(beam.DoFn):
    """(path, start, end) -> VG record (or scene part, with ``key``) | TaggedOutput(FAILED, Failure), streaming."""

    def __init__(self, key: str = "regions") -> None:
        self._key = key

    def process(self, element: tuple[str, int, int], image_data: dict | None = None) -> Iterator[Any]:
        path, start, end = element
        with FileSystems.open(path, compression_type="uncompressed") as handle:
            for item in visual_genome.read_images(handle, path, start, end, image_data, self._key):
                yield beam.pvalue.TaggedOutput(FAILED, item) if isinstance(item, Failure) else item


def scene_files(regions: str, objects: str | None, attributes: str | None, relationships: str | None) -> dict[str, str]:
    """The VG scene files to join to the regions: each flag's file, or the file of that name beside the
    region file when the flag is unset (``none`` turns one off)."""
    given = {"objects": objects, "attributes": attributes, "relationships": relationships}
    found = {}
    for key, path in given.items():
        if path is None:
            path = join(posixpath.dirname(regions), f"{key}.json")
            if not exists(path):
                continue
        if path != "none":
            found[key] = path
    return found


def _join_scene(element: tuple[str, dict[str, list]], limited: bool, scene: bool = True) -> Iterator[Any]:
    """(image_id, {regions, parts}) -> the region record with its objects and relationships; parts of an
    image the region file lacks go to failures (unless ``--limit`` left that image out on purpose)."""
    image_id, grouped = element
    records, parts = grouped["regions"], [p for key in visual_genome.SCENE_KEYS for p in grouped.get(key, [])]
    records = sorted(
        records, key=lambda r: json.dumps(r, sort_keys=True)
    )  # one image twice: the same one kept on every run
    for k, record in enumerate(records):
        if k:
            yield beam.pvalue.TaggedOutput(
                FAILED,
                Failure(
                    stage="ingest",
                    reason="ingest_duplicate_image",
                    source=visual_genome.VISUAL_GENOME,
                    image_id=image_id,
                    detail=f"image {image_id} appears {len(records)} times in the region file; the first is kept",
                ),
            )
        else:
            yield visual_genome.attach_scene(record, parts) if scene else record
    if not records and parts and not limited:
        yield beam.pvalue.TaggedOutput(
            FAILED,
            Failure(
                stage="ingest",
                reason="ingest_vg_no_regions",
                source=visual_genome.VISUAL_GENOME,
                image_id=image_id,
                detail=f"objects, attributes or relationships of image {image_id}, which the region file does not have",
            ),
        )


def _image_data_entries(path: str) -> Iterator[Any]:
    """``image_data.json`` -> its ``(image_id, entry)`` pairs, or one failure naming the file (its images are then
    read without sizes; each image whose entry gives an impossible size fails on its own)."""
    try:
        yield from visual_genome.parse_image_data(read_text(path)).items()
    except (InputError, UnicodeDecodeError) as err:
        reason, detail = (
            (err.reason, err.detail) if isinstance(err, InputError) else ("ingest_bad_image_data", str(err)[:200])
        )
        yield beam.pvalue.TaggedOutput(
            FAILED, Failure(stage="ingest", reason=reason, source=visual_genome.VISUAL_GENOME, path=path, detail=detail)
        )


def byte_ranges(path: str, split_bytes: int) -> list[tuple[str, int, int]]:
    """Split one file into ``(path, start, end)`` work units."""
    size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
    return [(path, start, end) for start, end in visual_genome.split_ranges(size, split_bytes)]


class ReadVisualGenome(beam.PTransform):
    """region_descriptions.json -> Read(records, failures), split into byte ranges across workers."""

    def __init__(
        self,
        regions: str,
        image_data: str | None = None,
        split_bytes: int = 64 << 20,
        limit: int = 0,
        scene: dict[str, str] | None = None,
    ):
        super().__init__()
        self._regions, self._image_data, self._split_bytes, self._limit = regions, image_data, split_bytes, limit
        self._scene = scene or {}

    def expand(self, pbegin) -> Read:
        side, info_failures = (), []
        if self._image_data:
            info = (
                pbegin
                | "ReadImageData" >> beam.Create([self._image_data])
                | "ParseImageData" >> beam.FlatMap(_image_data_entries).with_outputs(FAILED, main=OK)
            )
            side, info_failures = (beam.pvalue.AsDict(info[OK]),), [info[FAILED]]
        results = (
            pbegin
            | "RegionFile" >> beam.Create([self._regions])
            | "SplitRanges" >> beam.FlatMap(byte_ranges, self._split_bytes)
            | "SpreadRanges" >> beam.Reshuffle()
            | "ReadRegions" >> beam.ParDo(ReadRegionRangeFn(), *side).with_outputs(FAILED, main=OK)
        )
        records = results[OK]
        if self._limit:
            records = (
                records
                | "KeyById" >> beam.Map(lambda r: (r["image_id"], r))
                | "Limit" >> LimitImages(self._limit)
                | "DropKey" >> beam.Values()
            )
        # Joined by image id with the scene files (when given): also where an image that appears twice is caught.
        failures, keyed = (
            [results[FAILED], *info_failures],
            {"regions": records | "KeyRegions" >> beam.Map(lambda r: (r["image_id"], pack(r)))},
        )
        for key in self._scene:
            parts = (
                pbegin
                | f"{key.title()}File" >> beam.Create([self._scene[key]])
                | f"Split{key.title()}" >> beam.FlatMap(byte_ranges, self._split_bytes)
                | f"Spread{key.title()}" >> beam.Reshuffle()
                | f"Read{key.title()}" >> beam.ParDo(ReadRegionRangeFn(key)).with_outputs(FAILED, main=OK)
            )
            failures.append(parts[FAILED])
            keyed[key] = parts[OK] | f"Key{key.title()}" >> beam.Map(lambda p: (p["image_id"], pack(p)))
        joined = (
            keyed
            | "GroupScene" >> beam.CoGroupByKey()
            | "UnpackScene"
            >> beam.Map(
                lambda kv: (kv[0], {k: [unpack(x) for x in v] for k, v in kv[1].items()})
            )  # packed across the shuffle
            | "AttachScene"
            >> beam.FlatMap(_join_scene, bool(self._limit), bool(self._scene)).with_outputs(FAILED, main=OK)
        )
        failures.append(joined[FAILED])
        return Read(joined[OK], failures | "MergeVgFailures" >> beam.Flatten())
