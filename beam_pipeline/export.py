"""ExportInstructions: extra copies of the final instructions in training and data-lake formats."""

from __future__ import annotations

import io as pyio
from collections.abc import Sequence

import apache_beam as beam
import fastavro
import orjson
from apache_beam.io.filesystems import FileSystems

from beam_pipeline import io
from comvint import exports

FORMATS = ("llava", "messages", "trl", "avro", "parquet")
LLAVA_FILE = "comvint_llava.json"
PARQUET_ROW_GROUP = 50_000


def parse_formats(text: str) -> tuple[str, ...]:
    """``"llava,avro"`` -> ``("llava", "avro")``; unknown names are an error."""
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        raise ValueError(f"unknown --export {unknown}: choose from {', '.join(FORMATS)}")
    return names


def _by_id(record) -> str:
    return record["id"]


_AVRO = fastavro.parse_schema(exports.AVRO_SCHEMA)


def write_avro_shard(handle, lines: list[bytes]) -> None:
    fastavro.writer(handle, _AVRO, (orjson.loads(line) for line in lines), codec="deflate")


def write_parquet_shard(handle, lines: list[bytes]) -> None:
    """zstd-compressed Parquet in the standard nested layout, in row groups of at most PARQUET_ROW_GROUP rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = exports.arrow_schema()
    with pq.ParquetWriter(handle, schema, compression="zstd", use_compliant_nested_type=True) as writer:
        for start in range(0, max(1, len(lines)), PARQUET_ROW_GROUP):
            rows = [orjson.loads(line) for line in lines[start : start + PARQUET_ROW_GROUP]]
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))


def merge_llava(_, directory: str, parts: list[str]) -> str:
    """Stream the sorted LLaVA parts into the one JSON array LLaVA's loader takes; delete the parts."""
    path = io.join(directory, LLAVA_FILE)
    if not parts or not all(FileSystems.exists(p) for p in parts):
        if FileSystems.exists(path):  # a retried step whose first attempt finished
            return path
        raise FileNotFoundError(f"LLaVA parts missing under {directory}")
    first = True
    with FileSystems.create(path, mime_type="application/json", compression_type="uncompressed") as out:
        out.write(b"[\n")
        for part in sorted(parts):
            with FileSystems.open(part, compression_type="uncompressed") as handle:
                for line in pyio.TextIOWrapper(handle, encoding="utf-8"):
                    out.write((b"" if first else b",\n") + line.rstrip("\n").encode("utf-8"))
                    first = False
        out.write(b"\n]\n")
    FileSystems.delete(sorted(parts))
    parts_dir = io.join(directory, "parts")
    if FileSystems.exists(parts_dir):  # a local folder (object stores have none)
        FileSystems.delete([parts_dir])
    return path


class ExportInstructions(beam.PTransform):
    """Public instruction records -> ``<output>/export/<format>/`` for each chosen format.

    Every format is written as sorted shards sized like the other outputs (``num_shards`` 0: by the
    data); LLaVA's shards are then streamed into one file, ``export/llava/comvint_llava.json``.
    """

    def __init__(self, output: str, formats: Sequence[str], num_shards: int = 0, target_bytes: int = io.SHARD_TARGET_BYTES) -> None:
        super().__init__()
        self._output, self._formats, self._shards, self._target = output, tuple(formats), num_shards, target_bytes

    def _shards_of(self, rows, name: str, write, suffix: str, directory: str | None = None):
        directory = directory or io.join(self._output, "export", name)
        return rows | f"Write{name.title()}" >> io.WriteShards(directory, _by_id, write, suffix, self._shards, target_bytes=self._target)

    def expand(self, records):
        written = {}
        if "llava" in self._formats:
            llava_dir = io.join(self._output, "export", "llava")
            rows = records | "ToLlava" >> beam.Map(exports.to_llava)
            parts = self._shards_of(rows, "llava", io.write_jsonl_shard, ".jsonl", io.join(llava_dir, "parts"))
            written["llava"] = (
                records.pipeline
                | "OnceLlava" >> beam.Create([None])
                | "MergeLlava" >> beam.Map(merge_llava, llava_dir, beam.pvalue.AsList(parts))
            )
        for name, convert in (("messages", exports.to_messages), ("trl", exports.to_trl)):
            if name in self._formats:
                rows = records | f"To{name.title()}" >> beam.Map(convert)
                written[name] = self._shards_of(rows, name, io.write_jsonl_shard, ".jsonl")
        if {"avro", "parquet"} & set(self._formats):
            rows = records | "ToTableRows" >> beam.Map(exports.to_table_row)
            if "avro" in self._formats:
                written["avro"] = self._shards_of(rows, "avro", write_avro_shard, ".avro")
            if "parquet" in self._formats:
                written["parquet"] = self._shards_of(rows, "parquet", write_parquet_shard, ".parquet")
        return written
