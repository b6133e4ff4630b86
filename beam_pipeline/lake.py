"""CommitToLake: the run's instructions and rejected items as Parquet files in a table's folder, then one
atomic commit per table (Iceberg or Delta, see :mod:`comvint.lake`), after the accounting check."""

from __future__ import annotations

import os
import posixpath

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam_pipeline.exports import write_parquet_shard, write_rejected_parquet_shard
from beam_pipeline.files import join, write_json
from beam_pipeline.sinks import SHARD_TARGET_BYTES, WriteShards
from comvint import exports, lake

LAKE_FILE = "lake.json"
# Which rows, Parquet writer and schema each output's table gets.
TABLES = {
    "instructions": (exports.to_table_row, write_parquet_shard, exports.arrow_schema),
    "rejected": (exports.to_rejected_row, write_rejected_parquet_shard, exports.rejected_arrow_schema),
}


def commit_table(_, cfg: lake.LakeConfig, table: str, schema_of, files: list[str]) -> dict:
    """Commit the files one output wrote (on one worker)."""
    return lake.commit(cfg, table, files, schema_of(), delete_files)


def delete_files(paths: list[str]) -> None:
    """Delete a skipped commit's files, and their run's folder when it is local and left empty."""
    FileSystems.delete(paths)
    folder = posixpath.dirname(paths[0])
    if "://" not in folder and os.path.isdir(folder) and not os.listdir(folder):
        os.rmdir(folder)


def write_commits(commits: list[dict], output: str) -> str:
    path = join(output, LAKE_FILE)
    write_json(path, sorted(commits, key=lambda c: c["table"]))
    return path


class CommitToLake(beam.PTransform):
    """``{"instructions": records, "rejected": records}`` -> Parquet files under each table's folder (in
    parallel, only once ``gate`` — the checked run statistics — exists), then one commit per table and
    ``<output>/lake.json`` with what each commit did."""

    def __init__(
        self,
        cfg: lake.LakeConfig,
        output: str,
        gate: beam.PCollection,
        num_shards: int = 0,
        target_bytes: int = SHARD_TARGET_BYTES,
    ) -> None:
        super().__init__()
        self._cfg, self._output, self._gate, self._shards, self._target = cfg, output, gate, num_shards, target_bytes

    def expand(self, outputs: dict[str, beam.PCollection]):
        commits = []
        for name, table in self._cfg.names().items():
            to_row, write, schema_of = TABLES[name]
            label = name.title()
            files = (
                outputs[name]
                | f"{label}Rows" >> beam.Map(to_row)
                | f"Write{label}Files"
                >> WriteShards(
                    lake.data_dir(self._cfg, table),
                    _row_key,
                    write,
                    ".parquet",
                    self._shards,
                    gate=self._gate,
                    target_bytes=self._target,
                )
            )
            commits.append(
                files.pipeline
                | f"Once{label}" >> beam.Create([None])
                | f"Commit{label}" >> beam.Map(commit_table, self._cfg, table, schema_of, beam.pvalue.AsList(files))
            )
        return (
            commits
            | "MergeCommits" >> beam.Flatten()
            | "ListCommits" >> beam.combiners.ToList()
            | "WriteLakeJson" >> beam.Map(write_commits, self._output)
        )


def _row_key(row: dict) -> str:
    """Rows sort by id, then (rejected images have no id) by image and reason."""
    return "|".join(str(row.get(k)) for k in ("id", "source", "image_id", "stage", "reason", "round"))
