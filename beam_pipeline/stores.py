"""The cache's and the Batch API ledger's stores on any Beam file system: atomic, write-once where it matters."""

from __future__ import annotations

from apache_beam.io.filesystems import FileSystems

from beam_pipeline.files import exists, join, read_text, write_text
from comvint.llm.cache import MAX_ENTRY_BYTES, UnusableEntry


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
            write_text(path, value)


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
            write_text(path, text)
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
