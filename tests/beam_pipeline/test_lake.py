"""``--lake iceberg|delta``: the job commits its instructions and rejected items to tables, read back with
pyiceberg, DuckDB (its iceberg and delta extensions), deltalake and polars; a rerun adds nothing, another
configuration appends."""

from __future__ import annotations

import json
import pathlib

import polars as pl
import pytest
from deltalake import DeltaTable

from beam_pipeline import main
from comvint import lake
from tests.beam_pipeline.helpers import read_jsonl


def duckdb_with(*extensions: str):
    """DuckDB with its table-format extensions loaded from their pip packages (DuckDB would download them)."""
    import duckdb
    import duckdb_ext

    folder = pathlib.Path(next(iter(duckdb_ext.__path__))) / "extensions"
    con = duckdb.connect(config={"extension_directory": str(folder), "autoinstall_known_extensions": False})
    for name in extensions:
        con.execute(f"LOAD {name}")
    return con


def run(output: pathlib.Path, *flags: str) -> list[dict]:
    main.run(["--output", str(output), *flags])
    return json.loads((output / "lake.json").read_text())


def test_the_job_commits_to_iceberg_once_per_configuration(tmp_path):
    from pyiceberg.catalog.sql import SqlCatalog

    out = tmp_path / "out"
    first = run(out, "--lake", "iceberg")
    assert [(c["table"], c["skipped"], c["files"]) for c in first] == [
        ("comvint.instructions", False, 1),
        ("comvint.instructions_rejected", False, 1),
    ]
    catalog = SqlCatalog("comvint", uri=f"sqlite:///{out}/lake/catalog.db")
    instructions, rejected = (
        catalog.load_table("comvint.instructions"),
        catalog.load_table("comvint.instructions_rejected"),
    )
    expected = read_jsonl(str(out), "instructions")
    scanned = instructions.scan().to_arrow()
    assert sorted(scanned.column("id").to_pylist()) == sorted(r["id"] for r in expected) and expected
    assert scanned.num_rows == len(expected)
    assert sorted(rejected.scan().to_arrow().column("reason").to_pylist()) == sorted(
        r["reason"] for r in read_jsonl(str(out), "rejected")
    )
    summary = instructions.current_snapshot().summary.additional_properties
    assert summary[lake.RUN_ID] and summary[lake.CONFIG_HASH]
    scanned_by_duckdb = (
        duckdb_with("iceberg")
        .execute(f"SELECT id FROM iceberg_scan('{instructions.metadata_location}') ORDER BY id")
        .fetchall()
    )
    assert [row[0] for row in scanned_by_duckdb] == sorted(r["id"] for r in expected)

    again = run(out, "--lake", "iceberg", "--num_shards", "3")  # the same job (shard count is not content)
    assert all(c["skipped"] for c in again)
    assert len(catalog.load_table("comvint.instructions").snapshots()) == 1
    assert len(list((out / "lake" / "instructions" / "data").iterdir())) == 1  # the rerun's copies removed

    run(
        tmp_path / "other", "--lake", "iceberg", "--lake_uri", str(out / "lake"), "--seed", "1"
    )  # another configuration
    table = catalog.load_table("comvint.instructions")
    assert len(table.snapshots()) == 2
    assert table.scan().to_arrow().num_rows == len(expected) + len(read_jsonl(str(tmp_path / "other"), "instructions"))


def test_the_job_commits_to_delta_read_by_deltalake_and_polars(tmp_path):
    out = tmp_path / "out"
    run(out, "--lake", "delta")
    root = out / "lake" / "instructions"
    expected = sorted(r["id"] for r in read_jsonl(str(out), "instructions"))
    assert sorted(pl.scan_delta(str(root)).select("id").collect()["id"].to_list()) == expected
    assert [
        row[0] for row in duckdb_with("delta").execute(f"SELECT id FROM delta_scan('{root}') ORDER BY id").fetchall()
    ] == expected
    assert DeltaTable(str(out / "lake" / "instructions_rejected")).to_pyarrow_table().num_rows == len(
        read_jsonl(str(out), "rejected")
    )
    assert all(c["skipped"] for c in run(out, "--lake", "delta"))
    assert DeltaTable(str(root)).version() == 0 and len(DeltaTable(str(root)).file_uris()) == 1


def test_a_lake_needs_the_whole_method(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main.main(["--output", str(tmp_path), "--stages", "ingest", "--lake", "iceberg"])
    assert exit_.value.code == 2 and "--stages all" in capsys.readouterr().err
