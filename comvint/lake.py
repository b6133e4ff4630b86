"""Commit a run's Parquet files to a data-lake table (Apache Iceberg or Delta Lake) in one atomic commit.

The job writes the data files in parallel under the table's folder (:func:`data_dir`); one worker then
commits them all at once, after the run's accounting check passed. Nothing is rewritten: Iceberg adds the
files as they are (``pyiceberg``'s ``add_files``), Delta commits one ``add`` action per file.

* **Idempotent**: each commit carries the run's id and the hash of its configuration (Iceberg snapshot
  properties; Delta commit metadata and an application transaction ``comvint-<hash>``). A table that already
  holds a commit with the same configuration hash gets nothing more: rerunning the same job adds nothing
  (its new files are deleted again); a run with another configuration appends.
* **Concurrent writers**: a commit that loses the race to another writer is retried on the new table
  state (optimistic concurrency), up to :data:`COMMIT_ATTEMPTS` times, never dropped.
* **Schema evolution**: optional fields added to the records widen the table's schema.
* **Not partitioned** (by ``family``/``format`` or anything else): the job's files are sorted by id, each
  holding every family; partitioning would split every shard into one small file per family and format
  (a dozen per shard) for tables of a few million rows, where the per-file column statistics already
  let readers skip what they filter out.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import posixpath
from collections.abc import Callable, Iterable, Mapping
from typing import Any

LOG = logging.getLogger(__name__)
KINDS = ("iceberg", "delta")
COMMIT_ATTEMPTS = 20
RUN_ID, CONFIG_HASH = "comvint.run_id", "comvint.config_hash"
DEFAULT_NAMESPACE = "comvint"
# pyiceberg retries a lost commit itself, rebasing it on the winner's snapshot without asking whether the
# winner committed the same configuration; the tables the job creates leave retrying to :func:`commit_iceberg`,
# which asks that first.
TABLE_PROPERTIES = {"commit.retry.num-retries": "0"}


class LakeError(ValueError):
    """A ``--lake`` setting that cannot work."""


@dataclasses.dataclass(frozen=True)
class LakeConfig:
    """Where the tables are: ``kind`` (iceberg|delta), their root folder ``uri`` (local or ``gs://``/``s3://``),
    the Iceberg catalog (a SQLAlchemy URL for a SQL catalog, ``http(s)://`` for a REST one), and the
    instructions table's name (``namespace.table`` for Iceberg; the rejected items go to ``<name>_rejected``)."""

    kind: str
    uri: str
    catalog: str
    table: str
    run_id: str
    config_hash: str

    def names(self) -> dict[str, str]:
        """Which output goes to which table."""
        return {"instructions": self.table, "rejected": f"{self.table}_rejected"}


def lake_config(
    kind: str, output: str, table: str, catalog: str, uri: str, run_id: str, config_hash: str
) -> LakeConfig:
    """The configuration of ``--lake``, with the embedded defaults under ``output`` (``<output>/lake/``)."""
    if kind not in KINDS:
        raise LakeError(f"--lake {kind!r}: choose from {', '.join(KINDS)}")
    root = uri or posixpath.join(output, "lake")
    if not catalog and kind == "iceberg":
        if "://" in root:
            raise LakeError("--lake iceberg with a remote --lake_uri needs --lake_catalog (a SQL or REST catalog URL)")
        catalog = f"sqlite:///{os.path.abspath(posixpath.join(root, 'catalog.db'))}"
    name = table or (f"{DEFAULT_NAMESPACE}.instructions" if kind == "iceberg" else "instructions")
    if kind == "iceberg" and "." not in name:
        name = f"{DEFAULT_NAMESPACE}.{name}"
    return LakeConfig(kind, root.rstrip("/"), catalog, name, run_id, config_hash)


def config_hash(settings: Mapping[str, Any]) -> str:
    """A short stable hash of the settings that decide a run's content."""
    text = json.dumps({k: settings[k] for k in sorted(settings)}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def table_root(cfg: LakeConfig, table: str) -> str:
    """The folder of one table: ``<uri>/<table name>`` (an Iceberg table's name without its namespace)."""
    return f"{cfg.uri.rstrip('/')}/{table.rsplit('.', 1)[-1]}"


def data_dir(cfg: LakeConfig, table: str) -> str:
    """Where this run writes the table's data files: a folder of its own, inside the table's folder."""
    return f"{table_root(cfg, table)}/data/run-{cfg.run_id}"


def properties(cfg: LakeConfig) -> dict[str, str]:
    return {RUN_ID: cfg.run_id, CONFIG_HASH: cfg.config_hash}


def commit(
    cfg: LakeConfig, table: str, files: Iterable[str], schema, delete: Callable[[list[str]], None]
) -> dict[str, Any]:
    """Commit ``files`` (Parquet, ``schema``) to ``table`` once; ``delete(files)`` when the table already
    holds this configuration's commit. Returns what happened (for ``lake.json``)."""
    paths = sorted(files)
    committer = commit_iceberg if cfg.kind == "iceberg" else commit_delta
    result = committer(cfg, table, paths, schema)
    if result["skipped"] and paths and result["same_as"].get(RUN_ID) != cfg.run_id:  # never the committed files
        delete(paths)
    LOG.info("lake: %s", json.dumps(result))
    return result


def _absolute(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)


# -- Iceberg ------------------------------------------------------------------------------------------


def iceberg_catalog(cfg: LakeConfig):
    from pyiceberg.catalog.rest import RestCatalog
    from pyiceberg.catalog.sql import SqlCatalog

    if cfg.catalog.startswith(("http://", "https://")):
        return RestCatalog("comvint", uri=cfg.catalog, warehouse=cfg.uri)
    if cfg.catalog.startswith("sqlite:///"):
        os.makedirs(os.path.dirname(cfg.catalog[len("sqlite:///") :]), exist_ok=True)
    return SqlCatalog("comvint", uri=cfg.catalog, warehouse=cfg.uri)


def iceberg_table(catalog, cfg: LakeConfig, name: str, schema):
    """Load ``name``, creating its namespace and the table (in its folder under ``cfg.uri``) when missing."""
    from pyiceberg.exceptions import NamespaceAlreadyExistsError, NoSuchTableError, TableAlreadyExistsError

    try:
        return catalog.load_table(name)
    except NoSuchTableError:
        pass
    try:
        catalog.create_namespace(name.rsplit(".", 1)[0])
    except NamespaceAlreadyExistsError:
        pass
    try:
        return catalog.create_table(name, schema=schema, location=table_root(cfg, name), properties=TABLE_PROPERTIES)
    except TableAlreadyExistsError:  # another writer created it first
        return catalog.load_table(name)


def iceberg_commit_of(table, config: str) -> dict[str, str] | None:
    """The summary of the snapshot in the table's history that committed configuration ``config``, if any."""
    for snapshot in table.snapshots():
        summary = snapshot.summary.additional_properties if snapshot.summary else {}
        if summary.get(CONFIG_HASH) == config:
            return {"snapshot_id": str(snapshot.snapshot_id), **summary}
    return None


def commit_iceberg(cfg: LakeConfig, name: str, paths: list[str], schema) -> dict[str, Any]:
    """One ``add_files`` snapshot (after widening the schema if the files carry new fields), retried on conflict."""
    from pyiceberg.exceptions import CommitFailedException

    catalog = iceberg_catalog(cfg)
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        table = iceberg_table(catalog, cfg, name, schema)
        earlier = iceberg_commit_of(table, cfg.config_hash)
        if earlier:
            return {"table": name, "format": "iceberg", "skipped": True, "files": 0, "same_as": earlier}
        try:
            with table.transaction() as tx:
                with tx.update_schema() as update:
                    update.union_by_name(schema)
                if paths:
                    tx.add_files([_absolute(p) for p in paths], snapshot_properties=properties(cfg))
                else:  # an empty output still records that this configuration was committed
                    tx.append(schema.empty_table(), snapshot_properties=properties(cfg))
        except CommitFailedException as err:
            LOG.warning("lake: commit to %s lost a race (attempt %d): %s; retrying", name, attempt, err)
            continue
        snapshot = catalog.load_table(name).current_snapshot()
        return {
            "table": name,
            "format": "iceberg",
            "skipped": False,
            "files": len(paths),
            "attempts": attempt,
            "snapshot_id": str(snapshot.snapshot_id),
        }
    raise RuntimeError(f"lake: {name}: {COMMIT_ATTEMPTS} commit attempts all lost to concurrent writers")


# -- Delta --------------------------------------------------------------------------------------------


def app_id(cfg: LakeConfig) -> str:
    return f"comvint-{cfg.config_hash}"


def add_action(root: str, path: str):
    """A Delta ``add`` action for one Parquet file inside the table's folder, with its row count."""
    import pyarrow.fs
    import pyarrow.parquet as pq
    from deltalake.transaction import AddAction

    filesystem, inner = pyarrow.fs.FileSystem.from_uri(_absolute(path))
    info = filesystem.get_file_info(inner)
    with filesystem.open_input_file(inner) as handle:
        rows = pq.ParquetFile(handle).metadata.num_rows
    relative = posixpath.relpath(_absolute(path), _absolute(root)) if "://" not in path else path[len(root) + 1 :]
    return AddAction(
        relative, info.size, {}, int(info.mtime.timestamp() * 1000), True, json.dumps({"numRecords": rows})
    )


def commit_delta(cfg: LakeConfig, name: str, paths: list[str], schema) -> dict[str, Any]:
    """One Delta commit of ``add`` actions, marked with the application transaction of this configuration."""
    from deltalake import DeltaTable
    from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
    from deltalake.transaction import CommitProperties, Transaction, create_table_with_add_actions

    root = table_root(cfg, name)
    actions = [add_action(root, p) for p in paths]
    metadata = properties(cfg)
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        props = CommitProperties(custom_metadata=metadata, app_transactions=[Transaction(app_id(cfg), 1)])
        try:
            table = DeltaTable(root)
        except TableNotFoundError:
            try:
                create_table_with_add_actions(
                    root, _delta_schema(schema), actions, mode="error", name=name, commit_properties=props
                )
            except DeltaError as err:  # another writer created the table first
                LOG.warning("lake: creating %s lost a race (attempt %d): %s; retrying", name, attempt, err)
                continue
            return {
                "table": name,
                "format": "delta",
                "skipped": False,
                "files": len(paths),
                "attempts": attempt,
                "version": 0,
            }
        if table.transaction_version(app_id(cfg)) is not None:
            return {
                "table": name,
                "format": "delta",
                "skipped": True,
                "files": 0,
                "same_as": delta_commit_of(table, cfg),
            }
        try:
            added = new_fields(table, schema)
            if added:  # its own commit: a wider schema is harmless to readers even if the data commit fails
                table.alter.add_columns(added)
            table.create_write_transaction(actions, "append", table.schema(), commit_properties=props)
        except CommitFailedError as err:
            LOG.warning("lake: commit to %s lost a race (attempt %d): %s; retrying", name, attempt, err)
            continue
        return {
            "table": name,
            "format": "delta",
            "skipped": False,
            "files": len(paths),
            "attempts": attempt,
            "version": DeltaTable(root).version(),
        }
    raise RuntimeError(f"lake: {name}: {COMMIT_ATTEMPTS} commit attempts all lost to concurrent writers")


def _delta_schema(schema):
    from deltalake import Schema

    return Schema.from_arrow(schema)


def new_fields(table, schema) -> list:
    """The fields of ``schema`` the Delta table lacks, as optional Delta fields."""
    import pyarrow as pa

    current = pa.schema(table.schema().to_arrow())
    extra = [f.with_nullable(True) for f in schema if current.get_field_index(f.name) < 0]
    return list(_delta_schema(pa.schema(extra)).fields) if extra else []


def delta_commit_of(table, cfg: LakeConfig) -> dict[str, Any]:
    """The commit metadata of the version that committed ``cfg``'s configuration (its application transaction)."""
    for entry in table.history():
        if entry.get(CONFIG_HASH) == cfg.config_hash:
            return {"version": entry.get("version"), RUN_ID: entry.get(RUN_ID), CONFIG_HASH: cfg.config_hash}
    return {"app_id": app_id(cfg), CONFIG_HASH: cfg.config_hash}
