"""Reading the annotation sources and writing sinks: the only module doing file IO.

Every reader returns a :class:`Read` pair ``(records, failures)``; failures are
:class:`~comvint.records.Failure` objects, never dropped.
"""

from __future__ import annotations

import json
import logging
import posixpath
import struct
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from comvint.llm.cache import MAX_ENTRY_BYTES, UnusableEntry
from comvint.readers import flickr30k, visual_genome
from comvint.records import (
    FLICKR,
    Failure,
    InputError,
    pack,
    pack_text,
    safe_relative,
    stable_int,
    to_json_line,
    unpack,
    unpack_text,
)

_LOGGER = logging.getLogger(__name__)
OK, FAILED = "ok", "failed"
XML_REASONS = frozenset(
    {"ingest_malformed_xml", "ingest_missing_size", "ingest_bad_size", "ingest_bad_box", "ingest_box_outside_image"}
)


class Read(NamedTuple):
    records: beam.PCollection
    failures: beam.PCollection


def read_text(path: str) -> str:
    """Read a small text file (split lists, image_data) at pipeline construction."""
    with FileSystems.open(path) as handle:
        return handle.read().decode("utf-8")


def exists(path: str) -> bool:
    return FileSystems.exists(path)


def inside(root: str, path: str) -> bool:
    """Whether a local ``path`` resolves (symbolic links followed) to somewhere under ``root``; remote paths are."""
    if "://" in root:
        return True
    import os

    real_root = os.path.realpath(root)
    return os.path.commonpath([real_root, os.path.realpath(path)]) == real_root


def path_under(root: str, relative: str) -> str:
    """``root/relative``; :class:`InputError` for a relative path that is not plain parts, or that resolves
    (through a link) outside ``root``: nothing is read outside the trees a user names."""
    if not safe_relative(relative):
        raise InputError("outside_root", f"{relative[:120]!r} is not a plain relative path")
    path = join(root, relative)
    if not inside(root, path):
        raise InputError("outside_root", f"{relative[:120]!r} resolves outside {root}")
    return path


def join(*parts: str) -> str:
    return FileSystems.join(*parts) if parts[0].startswith("gs://") else posixpath.join(*parts)


def file_stem(path: str) -> str:
    return posixpath.splitext(posixpath.basename(path))[0]


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


def read_bytes(path: str) -> bytes:
    with FileSystems.open(path) as handle:
        return handle.read()


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
            | "Limit" >> LimitImages(self._limit)
            | "SpreadImages" >> beam.Reshuffle()
            | "ParseFlickr" >> beam.ParDo(ParseFlickrImageFn(self._unrelated, self._root)).with_outputs(FAILED, main=OK)
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
    records = sorted(records, key=lambda r: json.dumps(r, sort_keys=True))  # one image twice: the same one kept on every run
    for k, record in enumerate(records):
        if k:
            yield beam.pvalue.TaggedOutput(FAILED, Failure(
                stage="ingest", reason="ingest_duplicate_image", source=visual_genome.VISUAL_GENOME, image_id=image_id,
                detail=f"image {image_id} appears {len(records)} times in the region file; the first is kept"))
        else:
            yield visual_genome.attach_scene(record, parts) if scene else record
    if not records and parts and not limited:
        yield beam.pvalue.TaggedOutput(FAILED, Failure(
            stage="ingest", reason="ingest_vg_no_regions", source=visual_genome.VISUAL_GENOME, image_id=image_id,
            detail=f"objects, attributes or relationships of image {image_id}, which the region file does not have"))


def _image_data_entries(path: str) -> Iterator[Any]:
    """``image_data.json`` -> its ``(image_id, entry)`` pairs, or one failure naming the file (its images are then
    read without sizes; each image whose entry gives an impossible size fails on its own)."""
    try:
        yield from visual_genome.parse_image_data(read_text(path)).items()
    except (InputError, UnicodeDecodeError) as err:
        reason, detail = (err.reason, err.detail) if isinstance(err, InputError) else ("ingest_bad_image_data", str(err)[:200])
        yield beam.pvalue.TaggedOutput(FAILED, Failure(stage="ingest", reason=reason, source=visual_genome.VISUAL_GENOME, path=path,
                                                       detail=detail))


def byte_ranges(path: str, split_bytes: int) -> list[tuple[str, int, int]]:
    """Split one file into ``(path, start, end)`` work units."""
    size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
    return [(path, start, end) for start, end in visual_genome.split_ranges(size, split_bytes)]


class ReadVisualGenome(beam.PTransform):
    """region_descriptions.json -> Read(records, failures), split into byte ranges across workers."""

    def __init__(self, regions: str, image_data: str | None = None, split_bytes: int = 64 << 20, limit: int = 0,
                 scene: dict[str, str] | None = None):
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
        failures, keyed = [results[FAILED], *info_failures], {"regions": records | "KeyRegions" >> beam.Map(lambda r: (r["image_id"], pack(r)))}
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
            | "UnpackScene" >> beam.Map(lambda kv: (kv[0], {k: [unpack(x) for x in v] for k, v in kv[1].items()}))  # packed across the shuffle
            | "AttachScene" >> beam.FlatMap(_join_scene, bool(self._limit), bool(self._scene)).with_outputs(FAILED, main=OK)
        )
        failures.append(joined[FAILED])
        return Read(joined[OK], failures | "MergeVgFailures" >> beam.Flatten())


SHARD_TARGET_BYTES = 100 << 20  # --num_shards 0: about this much JSON per shard


class WriteJsonLines(beam.PTransform):
    """Records -> ``<prefix>/<name>/part-*.jsonl``.

    With ``sort_key`` the output is sharded and deterministic (see :class:`WriteShards`);
    without it, records stream straight to the files (for the large annotation output).
    """

    def __init__(self, prefix: str, name: str, num_shards: int = 1, sort_key=None, gate: beam.PCollection | None = None,
                 target_bytes: int = SHARD_TARGET_BYTES) -> None:
        super().__init__()
        self._prefix, self._name, self._shards, self._sort_key = prefix, name, num_shards, sort_key
        self._gate, self._target = gate, target_bytes

    def expand(self, records):
        if self._sort_key is None:
            lines = records | "ToJson" >> beam.Map(to_json_line)
            return lines | "Write" >> beam.io.WriteToText(join(self._prefix, self._name, "part"), file_name_suffix=".jsonl")
        return records | "Shards" >> WriteShards(
            join(self._prefix, self._name), self._sort_key, write_jsonl_shard, ".jsonl", self._shards, self._gate, self._target
        )


class WriteShards(beam.PTransform):
    """Records -> ``<directory>/part-SSSSS-of-NNNNN<suffix>``, each shard sorted by its records' keys.

    Deterministic: a record's shard is a stable hash of its key and each shard
    is sorted, so every run on any number of workers writes the same bytes.
    ``num_shards`` > 0 fixes the count; 0 sizes it from the data (one shard per
    ``target_bytes`` of JSON), so no sink goes through one key and one worker
    holds one shard at a time. ``write(handle, lines)`` writes one shard's sorted
    JSON lines (UTF-8 bytes) in its format. With ``gate`` (a one-element PCollection, e.g. the
    checked run statistics) no shard is written before it exists, so a run that
    fails its check leaves no output that looks complete. Output: the written paths.
    """

    def __init__(self, directory: str, sort_key, write, suffix: str, num_shards: int = 0,
                 gate: beam.PCollection | None = None, target_bytes: int = SHARD_TARGET_BYTES) -> None:
        super().__init__()
        self._dir, self._key, self._write, self._suffix = directory, sort_key, write, suffix
        self._shards, self._gate, self._target = num_shards, gate, target_bytes

    def expand(self, records):
        key, target = self._key, self._target
        lines = records | "ToJson" >> beam.Map(lambda rec: pack_line(key(rec), to_json_line(rec)))
        if self._shards > 0:
            count = records.pipeline | "ShardCount" >> beam.Create([self._shards])
        else:
            count = (
                lines
                | "LineBytes" >> beam.Map(line_size)
                | "TotalBytes" >> beam.CombineGlobally(sum)
                | "ShardCount" >> beam.Map(lambda total: max(1, -(-total // target)))
            )
        shards = beam.pvalue.AsSingleton(count)
        keyed = lines | "KeyByShard" >> beam.Map(lambda line, n: (line_shard(line, n), line), shards)
        empties = count | "EmptyShards" >> beam.FlatMap(lambda n: [(s, None) for s in range(n)])
        gate = [beam.pvalue.AsSingleton(self._gate)] if self._gate is not None else []
        written = (
            (keyed, empties)
            | "MergeEmpty" >> beam.Flatten()
            | "GroupShards" >> beam.GroupByKey()
            | "WriteShard" >> beam.Map(write_sorted_shard, self._dir, self._write, self._suffix, shards, *gate)
        )
        written.pipeline | "OnceClean" >> beam.Create([None]) | "RemoveStaleShards" >> beam.Map(
            remove_stale_shards, self._dir, self._suffix, beam.pvalue.AsList(written))
        return written


def stable_shard(key: str, shards: int) -> int:
    """A shard number that depends only on the key (not on Python's hash seed)."""
    return stable_int(key) % shards


_LINE_HEAD = struct.Struct(">QQ")  # the key's hash, the line's size in the file


def pack_line(key: str, line: str) -> bytes:
    """A record's sort key and JSON line as one shuffle value: a head (key hash, line size) that shard
    counting and sharding read as is, then key and line compressed. A shard's shuffle holds each record
    as one bytes object about a third of its line's size."""
    data, key_data = line.encode("utf-8"), key.encode("utf-8")
    head = _LINE_HEAD.pack(stable_int(key), len(data) + 1)
    return head + pack_text(len(key_data).to_bytes(4, "big") + key_data + data)


def unpack_line(value: bytes) -> tuple[str, bytes]:
    """``pack_line``'s value -> (key, the line's UTF-8 bytes)."""
    text = unpack_text(value[_LINE_HEAD.size:])
    size = int.from_bytes(text[:4], "big")
    return text[4 : 4 + size].decode("utf-8"), text[4 + size :]


def line_shard(value: bytes, shards: int) -> int:
    return _LINE_HEAD.unpack_from(value)[0] % shards


def line_size(value: bytes) -> int:
    """Bytes the line takes in a JSON-lines file, its newline included."""
    return _LINE_HEAD.unpack_from(value)[1]


def shard_path(directory: str, shard: int, shards: int, suffix: str) -> str:
    return join(directory, f"part-{shard:05d}-of-{shards:05d}{suffix}")


def write_sorted_shard(group: tuple[int, Iterable[bytes | None]], directory: str, write, suffix: str,
                       shards: int, _gate: Any = None) -> str:
    """Write one shard's JSON lines sorted by key, in the format of ``write``; return the path."""
    shard, values = group
    lines = [line for _, line in sorted(unpack_line(value) for value in values if value is not None)]
    path = shard_path(directory, shard, shards, suffix)
    with FileSystems.create(path, compression_type="uncompressed") as handle:
        write(handle, lines)
    return path


def remove_stale_shards(_, directory: str, suffix: str, written: list[str]) -> list[str]:
    """Delete shards an earlier run left in ``directory`` (another shard count): readers see this run's files only."""
    matches = FileSystems.match([join(directory, f"part-*-of-*{suffix}")])[0].metadata_list
    stale = sorted(m.path for m in matches if m.path not in set(written))
    if stale:
        FileSystems.delete(stale)
        _LOGGER.info("Removed %d shard(s) of an earlier run under %s", len(stale), directory)
    return stale


def write_jsonl_shard(handle, lines: list[bytes]) -> None:
    for line in lines:
        handle.write(line + b"\n")


def write_json(path: str, value: Any) -> None:
    """Write one JSON document (stats.json)."""
    with FileSystems.create(path) as handle:
        handle.write(json.dumps(value, indent=2, sort_keys=True).encode("utf-8") + b"\n")


class WriteConvertFiles(beam.PTransform):
    """Flickr30k records -> ``<prefix>/Convert/<image_id>.txt`` in process.sh's layout (all boxes)."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self._dir = join(prefix, "Convert")

    def expand(self, records):
        directory = self._dir
        return (
            records
            | "OnlyFlickr" >> beam.Filter(lambda r: r["source"] == FLICKR)
            | "WriteConvert" >> beam.Map(lambda r: _write_text(join(directory, f"{r['image_id']}.txt"), flickr30k.convert_record(r)))
        )


def _write_text(path: str, text: str) -> str:
    with FileSystems.create(path) as handle:
        handle.write(text.encode("utf-8"))
    return path


class FileSystemsStore:
    """A cache store on any Beam file system (a local directory or ``gs://``).

    Entries are ``<root>/<key[:2]>/<key>.json``. A local write is atomic and
    write-once (temporary file + hard link, which fails if the entry exists);
    on GCS an object upload is atomic, and two workers that race on a key both
    write a valid reply for it.
    """

    def __init__(self, root: str) -> None:
        self._root = root
        self.fast = "://" not in root  # local disk: cheap enough to call on the event loop

    def _path(self, key: str) -> str:
        return join(self._root, key[:2], f"{key}.json")

    def get(self, key: str) -> str | None:
        if self.fast:  # plain os.open(): a fifth of the CPU of Beam's file system layer, per request
            return _read_regular_file(self._path(key))
        try:
            with FileSystems.open(self._path(key), compression_type="uncompressed") as handle:
                data = handle.read(MAX_ENTRY_BYTES + 1)
            if len(data) > MAX_ENTRY_BYTES:
                raise UnusableEntry(f"larger than {MAX_ENTRY_BYTES} bytes")
            return data.decode("utf-8", errors="replace")
        except Exception:  # noqa: BLE001 - Beam raises BeamIOError/IOError for a missing file
            if FileSystems.exists(self._path(key)):
                raise
            return None

    def put_if_absent(self, key: str, value: str) -> bool:
        path = self._path(key)
        if self.fast:
            return _link_new_file(path, value.encode("utf-8"))
        return _create_object_once(path, value.encode("utf-8"))

    def replace(self, key: str, value: str) -> None:
        """Overwrite an entry that cannot be used (atomically: a reader sees the old entry or the new one)."""
        path = self._path(key)
        if self.fast:
            _replace_file(path, value.encode("utf-8"))
        else:
            _write_text(path, value)


def _read_regular_file(path: str) -> str | None:
    """A local entry's text: None if absent; :class:`UnusableEntry` for a symlink, a FIFO, a device or a
    file too large to be a reply (never followed, never blocked on, never read whole)."""
    import os
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as err:  # ELOOP: a symbolic link
        raise UnusableEntry(f"cannot be opened without following a link: {err.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnusableEntry("not a regular file")
        data = handle.read(MAX_ENTRY_BYTES + 1)
    if len(data) > MAX_ENTRY_BYTES:
        raise UnusableEntry(f"larger than {MAX_ENTRY_BYTES} bytes")
    return data.decode("utf-8", errors="replace")


def _replace_file(path: str, data: bytes) -> None:
    import os
    import tempfile

    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


class FileSystemsLedgerStore:
    """The Batch API ledger's files under ``<cache_dir>/batches/`` on any Beam file system.

    A local file is replaced atomically (temporary file + rename); a ``gs://`` object upload is atomic.
    """

    def __init__(self, cache_dir: str) -> None:
        self._root = join(cache_dir, "batches")

    def names(self) -> list[str]:
        try:
            found = FileSystems.match([join(self._root, "*.json")])[0].metadata_list
        except Exception:  # noqa: BLE001 - Beam raises when the folder does not exist yet: no batch was submitted
            return []
        return sorted(m.path.rsplit("/", 1)[-1] for m in found)

    def read(self, name: str) -> str | None:
        path = join(self._root, name)
        return read_text(path) if exists(path) else None

    def write(self, name: str, text: str) -> None:
        path = join(self._root, name)
        if "://" in path:
            _write_text(path, text)
        else:
            _replace_file(path, text.encode("utf-8"))


def _create_object_once(path: str, data: bytes) -> bool:
    """Create a ``gs://`` object only if it does not exist (``if_generation_match=0``): of two workers that race
    on a key exactly one writes, the other is told and reads the winner's entry. False when it existed."""
    from apache_beam.io.gcp.gcsio import GcsIO
    from google.api_core.exceptions import PreconditionFailed

    bucket, name = path[len("gs://") :].split("/", 1)
    blob = GcsIO().client.bucket(bucket).blob(name)
    if blob.exists():  # the common case, and the only check an emulator without preconditions honours
        return False
    try:
        blob.upload_from_string(data, content_type="application/json", if_generation_match=0)
    except PreconditionFailed:
        return False
    return True


def _link_new_file(path: str, data: bytes) -> bool:
    import os
    import tempfile

    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
