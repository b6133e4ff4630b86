"""Writing outputs: deterministic sorted JSON-lines shards (records packed as compressed bytes across the
shuffle), and the Flickr30k ``Convert/`` files."""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam_pipeline.files import join, write_text
from comvint.readers import flickr30k
from comvint.records import (
    FLICKR,
    pack_text,
    stable_int,
    to_json_line,
    unpack_text,
)

_LOGGER = logging.getLogger(__name__)

SHARD_TARGET_BYTES = 100 << 20  # --num_shards 0: about this much JSON per shard


class WriteJsonLines(beam.PTransform):
    """Records -> ``<prefix>/<name>/part-*.jsonl``.

    With ``sort_key`` the output is sharded and deterministic (see :class:`WriteShards`);
    without it, records stream straight to the files (for the large annotation output).
    """

    def __init__(
        self,
        prefix: str,
        name: str,
        num_shards: int = 1,
        sort_key=None,
        gate: beam.PCollection | None = None,
        target_bytes: int = SHARD_TARGET_BYTES,
    ) -> None:
        super().__init__()
        self._prefix, self._name, self._shards, self._sort_key = prefix, name, num_shards, sort_key
        self._gate, self._target = gate, target_bytes

    def expand(self, records):
        if self._sort_key is None:
            lines = records | "ToJson" >> beam.Map(to_json_line)
            return lines | "Write" >> beam.io.WriteToText(
                join(self._prefix, self._name, "part"), file_name_suffix=".jsonl"
            )
        return records | "Shards" >> WriteShards(
            join(self._prefix, self._name),
            self._sort_key,
            write_jsonl_shard,
            ".jsonl",
            self._shards,
            self._gate,
            self._target,
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

    def __init__(
        self,
        directory: str,
        sort_key,
        write,
        suffix: str,
        num_shards: int = 0,
        gate: beam.PCollection | None = None,
        target_bytes: int = SHARD_TARGET_BYTES,
    ) -> None:
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
        (
            written.pipeline
            | "OnceClean" >> beam.Create([None])
            | "RemoveStaleShards" >> beam.Map(remove_stale_shards, self._dir, self._suffix, beam.pvalue.AsList(written))
        )
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
    text = unpack_text(value[_LINE_HEAD.size :])
    size = int.from_bytes(text[:4], "big")
    return text[4 : 4 + size].decode("utf-8"), text[4 + size :]


def line_shard(value: bytes, shards: int) -> int:
    return _LINE_HEAD.unpack_from(value)[0] % shards


def line_size(value: bytes) -> int:
    """Bytes the line takes in a JSON-lines file, its newline included."""
    return _LINE_HEAD.unpack_from(value)[1]


def shard_path(directory: str, shard: int, shards: int, suffix: str) -> str:
    return join(directory, f"part-{shard:05d}-of-{shards:05d}{suffix}")


def write_sorted_shard(
    group: tuple[int, Iterable[bytes | None]], directory: str, write, suffix: str, shards: int, _gate: Any = None
) -> str:
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
            | "WriteConvert"
            >> beam.Map(lambda r: write_text(join(directory, f"{r['image_id']}.txt"), flickr30k.convert_record(r)))
        )
