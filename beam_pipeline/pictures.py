"""The pictures a worker sends: each image file under ``--image_root`` read once (local or gs://, through
Beam's FileSystems) and made into a :class:`comvint.images.Picture` at the run's detail setting."""

from __future__ import annotations

import functools

from apache_beam.io.filesystems import FileSystems

from beam_pipeline.files import path_under
from comvint.images import ImageError, Picture, picture
from comvint.records import InputError

CACHED = 256  # pictures a worker keeps (a few MB): an image's items meet on few workers


class Pictures:
    """``get(relative path)`` -> Picture, or :class:`ImageError` for a file missing, unreadable or not an image."""

    def __init__(self, root: str, detail: str, max_px: int = 0) -> None:
        self._root, self._detail, self._max_px = root, detail, max_px
        self.get = functools.lru_cache(maxsize=CACHED)(self._load)  # a failure is not cached: the next item tries again

    def _load(self, relative: str) -> Picture:
        try:
            path = path_under(self._root, relative)
        except InputError as err:
            raise ImageError(err.detail) from None
        try:
            with FileSystems.open(path, compression_type="uncompressed") as handle:
                data = handle.read()
        except Exception as err:  # noqa: BLE001 - any filesystem's "cannot read" becomes this item's dead letter
            raise ImageError(f"cannot read {path}: {type(err).__name__}: {err}"[:300]) from None
        return picture(data, self._detail, self._max_px)
