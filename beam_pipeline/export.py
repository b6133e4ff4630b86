"""ExportInstructions: extra copies of the final instructions in training and data-lake formats."""

from __future__ import annotations

from collections.abc import Sequence

import apache_beam as beam

from beam_pipeline import io
from comvint import exports

FORMATS = ("llava", "messages", "avro", "parquet")


def parse_formats(text: str) -> tuple[str, ...]:
    """``"llava,avro"`` -> ``("llava", "avro")``; unknown names are an error."""
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        raise ValueError(f"unknown --export {unknown}: choose from {', '.join(FORMATS)}")
    return names


def _by_id(record) -> str:
    return record["id"]


def _messages_key(record) -> str:
    return "\x1f".join([*record["images"], *(m["content"] for m in record["messages"])])


class ExportInstructions(beam.PTransform):
    """Public instruction records -> ``<output>/export/<format>/part-*`` for each chosen format."""

    def __init__(self, output: str, formats: Sequence[str], num_shards: int = 1) -> None:
        super().__init__()
        self._output, self._formats, self._shards = output, tuple(formats), max(1, num_shards)

    def expand(self, records):
        out, shards, written = self._output, self._shards, {}
        if "llava" in self._formats:
            written["llava"] = (
                records
                | "ToLlava" >> beam.Map(exports.to_llava)
                | "WriteLlava" >> io.WriteJsonLines(out, "export/llava", shards, sort_key=_by_id, json_array=True)
            )
        if "messages" in self._formats:
            written["messages"] = (
                records
                | "ToMessages" >> beam.Map(exports.to_messages)
                | "WriteMessages" >> io.WriteJsonLines(out, "export/messages", shards, sort_key=_messages_key)
            )
        rows = records | "ToTableRows" >> beam.Map(exports.to_table_row) if {"avro", "parquet"} & set(self._formats) else None
        if "avro" in self._formats:
            written["avro"] = rows | "WriteAvro" >> beam.io.WriteToAvro(
                io.join(out, "export/avro/part"), exports.AVRO_SCHEMA, file_name_suffix=".avro", num_shards=shards
            )
        if "parquet" in self._formats:
            written["parquet"] = rows | "WriteParquet" >> beam.io.WriteToParquet(
                io.join(out, "export/parquet/part"), exports.arrow_schema(), file_name_suffix=".parquet", num_shards=shards
            )
        return written
