"""ExportInstructions: extra copies of the final instructions in training and data-lake formats."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence

import apache_beam as beam
import fastavro
import orjson
from apache_beam.io.filesystems import FileSystems

from beam_pipeline.files import join
from beam_pipeline.sinks import SHARD_TARGET_BYTES, WriteShards, write_jsonl_shard
from comvint import exports
from comvint.records import stable_int

FORMATS = ("llava", "messages", "trl", "avro", "parquet", "review")
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


def write_parquet_shard(handle, lines: list[bytes], schema=None) -> None:
    """zstd-compressed Parquet in the standard nested layout (``schema``: the instructions' by default), in
    row groups of at most PARQUET_ROW_GROUP rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = schema or exports.arrow_schema()
    with pq.ParquetWriter(handle, schema, compression="zstd", use_compliant_nested_type=True) as writer:
        for start in range(0, max(1, len(lines)), PARQUET_ROW_GROUP):
            rows = [orjson.loads(line) for line in lines[start : start + PARQUET_ROW_GROUP]]
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))


def write_rejected_parquet_shard(handle, lines: list[bytes]) -> None:
    write_parquet_shard(handle, lines, exports.rejected_arrow_schema())


def merge_llava(_, directory: str, parts: list[str]) -> str:
    """Stream the sorted LLaVA parts into the one JSON array LLaVA's loader takes; delete the parts."""
    path = join(directory, LLAVA_FILE)
    if not parts or not all(FileSystems.exists(p) for p in parts):
        if FileSystems.exists(path):  # a retried step whose first attempt finished
            return path
        raise FileNotFoundError(f"LLaVA parts missing under {directory}")
    first = True
    with FileSystems.create(path, mime_type="application/json", compression_type="uncompressed") as out:
        out.write(b"[\n")
        for part in sorted(parts):
            with FileSystems.open(part, compression_type="uncompressed") as handle:
                for line in io.TextIOWrapper(handle, encoding="utf-8"):
                    out.write((b"" if first else b",\n") + line.rstrip("\n").encode("utf-8"))
                    first = False
        out.write(b"\n]\n")
    FileSystems.delete(sorted(parts))
    parts_dir = join(directory, "parts")
    if FileSystems.exists(parts_dir):  # a local folder (object stores have none)
        FileSystems.delete([parts_dir])
    return path


class ExportInstructions(beam.PTransform):
    """Public instruction records -> ``<output>/export/<format>/`` for each chosen format.

    Every format is written as sorted shards sized like the other outputs (``num_shards`` 0: by the
    data); LLaVA's shards are then streamed into one file, ``export/llava/comvint_llava.json``.
    """

    def __init__(
        self,
        output: str,
        formats: Sequence[str],
        num_shards: int = 0,
        target_bytes: int = SHARD_TARGET_BYTES,
        review: ReviewSample | None = None,
    ) -> None:
        super().__init__()
        self._output, self._formats, self._shards, self._target = output, tuple(formats), num_shards, target_bytes
        self._review = review or ReviewSample()

    def _shards_of(self, rows, name: str, write, suffix: str, directory: str | None = None):
        directory = directory or join(self._output, "export", name)
        return rows | f"Write{name.title()}" >> WriteShards(
            directory, _by_id, write, suffix, self._shards, target_bytes=self._target
        )

    def expand(self, records):
        written = {}
        if "llava" in self._formats:
            llava_dir = join(self._output, "export", "llava")
            rows = records | "ToLlava" >> beam.Map(exports.to_llava)
            parts = self._shards_of(rows, "llava", write_jsonl_shard, ".jsonl", join(llava_dir, "parts"))
            written["llava"] = (
                records.pipeline
                | "OnceLlava" >> beam.Create([None])
                | "MergeLlava" >> beam.Map(merge_llava, llava_dir, beam.pvalue.AsList(parts))
            )
        for name, convert in (("messages", exports.to_messages), ("trl", exports.to_trl)):
            if name in self._formats:
                rows = records | f"To{name.title()}" >> beam.Map(convert)
                written[name] = self._shards_of(rows, name, write_jsonl_shard, ".jsonl")
        if {"avro", "parquet"} & set(self._formats):
            rows = records | "ToTableRows" >> beam.Map(exports.to_table_row)
            if "avro" in self._formats:
                written["avro"] = self._shards_of(rows, "avro", write_avro_shard, ".avro")
            if "parquet" in self._formats:
                written["parquet"] = self._shards_of(rows, "parquet", write_parquet_shard, ".parquet")
        if "review" in self._formats:
            written["review"] = records | "ExportReview" >> WriteReview(
                join(self._output, "export", "review"), self._review
            )
        return written


@dataclasses.dataclass(frozen=True)
class ReviewSample:
    """How many instructions go to human review, chosen by ``seed``, and where their pictures are."""

    tasks: int = 500
    seed: int = 0
    image_root: str | None = None


def write_review(chosen: list[dict], directory: str, image_root: str | None) -> list[str]:
    """``tasks.json`` (sorted by id) and ``labeling_config.xml`` for a Label Studio project."""
    tasks = [exports.to_review_task(r, image_root) for r in sorted(chosen, key=_by_id)]
    paths = [join(directory, exports.REVIEW_TASKS_FILE), join(directory, exports.REVIEW_CONFIG_FILE)]
    for path, data in zip(
        paths, (orjson.dumps(tasks, option=orjson.OPT_INDENT_2), exports.REVIEW_CONFIG.encode("utf-8")), strict=True
    ):
        with FileSystems.create(path, compression_type="uncompressed") as handle:
            handle.write(data)
    return paths


class WriteReview(beam.PTransform):
    """Instructions -> a seeded sample of ``sample.tasks`` of them as a Label Studio import, with its labeling
    config."""

    def __init__(self, directory: str, sample: ReviewSample) -> None:
        super().__init__()
        self._dir, self._sample = directory, sample

    def expand(self, records):
        seed = self._sample.seed
        return (
            records
            | "ChooseForReview"
            >> beam.combiners.Top.Of(
                self._sample.tasks, key=lambda r: stable_int(seed, "review", r["id"]), reverse=True
            )
            | "WriteReviewFiles" >> beam.Map(write_review, self._dir, self._sample.image_root)
        )
