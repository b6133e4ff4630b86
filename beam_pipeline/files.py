"""Paths and small files on any Beam file system (local or ``gs://``): read, write, join, and keep reads inside a
root."""

from __future__ import annotations

import functools
import json
import os
import posixpath
from typing import Any

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from comvint.records import (
    InputError,
    safe_relative,
)


def read_text(path: str) -> str:
    """Read a small text file (split lists, image_data) at pipeline construction."""
    with FileSystems.open(path) as handle:
        return handle.read().decode("utf-8")


def exists(path: str) -> bool:
    return FileSystems.exists(path)


@functools.lru_cache(maxsize=256)
def _real_dir(path: str) -> str:
    return os.path.realpath(path)


def inside(root: str, path: str) -> bool:
    """Whether a local ``path`` resolves (symbolic links followed) to somewhere under ``root``; remote paths are.

    The folders' resolutions are cached per process (a tree's thousands of files sit in a few folders): a file
    costs one ``lstat``, and a full resolution only when it is itself a link."""
    if "://" in root:
        return True
    real_root = _real_dir(root)
    folder, name = os.path.split(path)
    real = os.path.join(_real_dir(folder), name)
    if name in ("", ".", "..") or os.path.islink(real):
        real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


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


def read_bytes(path: str) -> bytes:
    """A file's bytes (decompressed when its suffix names a compression, as Beam reads it). A plain local file is
    read with ``open()``: a tree of 60,000 small files spends a tenth of its ingest in Beam's file layer otherwise."""
    if "://" not in path and CompressionTypes.detect_compression_type(path) == CompressionTypes.UNCOMPRESSED:
        with open(path, "rb") as handle:
            return handle.read()
    with FileSystems.open(path) as handle:
        return handle.read()


def write_json(path: str, value: Any) -> None:
    """Write one JSON document (stats.json)."""
    with FileSystems.create(path) as handle:
        handle.write(json.dumps(value, indent=2, sort_keys=True).encode("utf-8") + b"\n")


def write_text(path: str, text: str) -> str:
    with FileSystems.create(path) as handle:
        handle.write(text.encode("utf-8"))
    return path
