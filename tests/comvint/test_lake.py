"""comvint.lake: atomic, idempotent commits of Parquet files to Iceberg and Delta tables, read back by
their consumers' own code (pyiceberg's scan; deltalake and polars)."""

from __future__ import annotations

import multiprocessing
import os
import pathlib

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from comvint import lake

SCHEMA = pa.schema([pa.field("id", pa.string(), nullable=False), ("round", pa.int32())])
WIDER = pa.schema([*SCHEMA, ("knowledge_topic", pa.string())])


def config(kind: str, root: pathlib.Path, run: str, config_hash: str) -> lake.LakeConfig:
    return lake.lake_config(kind, str(root), "", "", "", run, config_hash)


def write_files(cfg: lake.LakeConfig, ids: list[str], schema: pa.Schema = SCHEMA, files: int = 2) -> list[str]:
    """Parquet files of rows ``ids`` in this run's data folder of the instructions table."""
    folder = pathlib.Path(lake.data_dir(cfg, cfg.table))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(files):
        rows = [
            {"id": i, "round": 1, **({"knowledge_topic": "t"} if "knowledge_topic" in schema.names else {})}
            for i in ids[n::files]
        ]
        path = folder / f"part-{n:05d}-of-{files:05d}.parquet"
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
        paths.append(str(path))
    return paths


def read_ids(cfg: lake.LakeConfig) -> list[str]:
    """The table's ids, read by the format's own reader."""
    if cfg.kind == "iceberg":
        return sorted(lake.iceberg_catalog(cfg).load_table(cfg.table).scan().to_arrow().column("id").to_pylist())
    return sorted(pl.scan_delta(lake.table_root(cfg, cfg.table)).select("id").collect()["id"].to_list())


def commits(cfg: lake.LakeConfig) -> int:
    if cfg.kind == "iceberg":
        return len(lake.iceberg_catalog(cfg).load_table(cfg.table).snapshots())
    return DeltaTable(lake.table_root(cfg, cfg.table)).version() + 1


def commit(cfg: lake.LakeConfig, paths: list[str], schema: pa.Schema = SCHEMA) -> dict:
    return lake.commit(cfg, cfg.table, paths, schema, lambda files: [os.remove(f) for f in files])


@pytest.mark.parametrize("kind", lake.KINDS)
def test_a_rerun_of_the_same_configuration_adds_nothing_and_another_appends(kind, tmp_path):
    first = config(kind, tmp_path, "run1", "config-a")
    assert not commit(first, write_files(first, ["a1", "a2", "a3"]))["skipped"]
    before = commits(first)
    rerun = config(kind, tmp_path, "run2", "config-a")  # the same job again: a new run id, the same configuration
    rerun_files = write_files(rerun, ["a1", "a2", "a3"])
    result = commit(rerun, rerun_files)
    assert result["skipped"] and result["same_as"][lake.RUN_ID] == "run1"
    assert commits(first) == before and read_ids(first) == ["a1", "a2", "a3"]
    assert not any(os.path.exists(p) for p in rerun_files)  # the rerun's unreferenced copies are gone
    other = config(kind, tmp_path, "run3", "config-b")
    assert not commit(other, write_files(other, ["b1", "b2"]))["skipped"]
    assert read_ids(first) == ["a1", "a2", "a3", "b1", "b2"]


@pytest.mark.parametrize("kind", lake.KINDS)
def test_a_skipped_commit_never_deletes_the_files_the_table_references(kind, tmp_path):
    cfg = config(kind, tmp_path, "run1", "config-a")
    paths = write_files(cfg, ["a1", "a2"])
    commit(cfg, paths)
    assert commit(cfg, paths)["skipped"]  # the very same run committing twice (a retried step)
    assert all(os.path.exists(p) for p in paths) and read_ids(cfg) == ["a1", "a2"]


@pytest.mark.parametrize("kind", lake.KINDS)
def test_an_added_optional_field_widens_the_table(kind, tmp_path):
    old = config(kind, tmp_path, "run1", "config-a")
    commit(old, write_files(old, ["a1"], files=1))
    new = config(kind, tmp_path, "run2", "config-b")
    commit(new, write_files(new, ["b1"], WIDER, files=1), WIDER)
    if kind == "iceberg":
        table = lake.iceberg_catalog(new).load_table(new.table).scan().to_arrow()
    else:
        table = DeltaTable(lake.table_root(new, new.table)).to_pyarrow_table()
    rows = sorted(table.to_pylist(), key=lambda r: r["id"])
    assert rows == [{"id": "a1", "round": 1, "knowledge_topic": None}, {"id": "b1", "round": 1, "knowledge_topic": "t"}]


def _commit_at_once(kind: str, root: str, run: str, ids: list[str], barrier) -> None:
    cfg = config(kind, pathlib.Path(root), run, f"config-{run}")
    paths = write_files(cfg, ids)
    barrier.wait()
    commit(cfg, paths)


@pytest.mark.parametrize("kind", lake.KINDS)
def test_two_processes_committing_to_one_table_at_once_both_land(kind, tmp_path):
    seed = config(kind, tmp_path, "seed", "config-seed")  # the table exists: both race to append to it
    commit(seed, write_files(seed, ["s"], files=1))
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    procs = [
        context.Process(target=_commit_at_once, args=(kind, str(tmp_path), run, ids, barrier))
        for run, ids in (("one", ["x1", "x2"]), ("two", ["y1", "y2"]))
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    assert read_ids(seed) == ["s", "x1", "x2", "y1", "y2"]
    assert commits(seed) == 3


@pytest.mark.parametrize("same_job", [False, True])
def test_an_iceberg_commit_that_loses_a_race_is_retried_on_the_new_table(same_job, tmp_path, monkeypatch):
    from pyiceberg.table import Transaction

    winner = config("iceberg", tmp_path, "w", "config-w")
    loser = config("iceberg", tmp_path, "l", "config-w" if same_job else "config-l")
    commit(
        config("iceberg", tmp_path, "s", "config-s"), write_files(config("iceberg", tmp_path, "s", "config-s"), ["s"])
    )
    winner_files, loser_files = write_files(winner, ["w1"]), write_files(loser, ["l1"])
    original, raced = Transaction.commit_transaction, []

    def commit_after_a_rival(self):
        if not raced:  # between the loser's read of the table and its commit, the winner commits
            raced.append(True)
            commit(winner, winner_files)
        return original(self)

    monkeypatch.setattr(Transaction, "commit_transaction", commit_after_a_rival)
    result = commit(loser, loser_files)
    if same_job:  # the retry finds the same configuration committed by the winner: nothing is added twice
        assert result["skipped"] and read_ids(loser) == ["s", "w1"]
    else:
        assert result["attempts"] == 2 and not result["skipped"]
        assert read_ids(loser) == ["l1", "s", "w1"]


def test_settings_that_cannot_work_are_refused(tmp_path):
    with pytest.raises(lake.LakeError, match="--lake_catalog"):
        lake.lake_config("iceberg", str(tmp_path), "", "", "gs://bucket/lake", "r", "h")
    with pytest.raises(lake.LakeError, match="choose from"):
        lake.lake_config("hudi", str(tmp_path), "", "", "", "r", "h")
    assert lake.lake_config("iceberg", "out", "events", "", "", "r", "h").table == "comvint.events"
    assert (
        lake.config_hash({"a": 1, "b": [2]})
        == lake.config_hash({"b": [2], "a": 1})
        != lake.config_hash({"a": 2, "b": [2]})
    )
