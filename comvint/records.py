"""Record types shared by every stage.

Annotation records are plain JSON-ready dicts whose layout is fixed by
``docs/contract.md`` (see :func:`annotation_record`); the records a stage
produces about its own work (:class:`Failure`) are frozen dataclasses.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
import zlib
from typing import Any

import orjson

FLICKR = "flickr30k_entities"
VISUAL_GENOME = "visual_genome"

Box = list[int]


class InputError(ValueError):
    """An input that cannot be turned into a record; ``reason`` is a reason code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclasses.dataclass(frozen=True)
class Failure:
    """An input or item that could not be processed (the dead-letter record).

    Attributes:
      stage: the stage that failed (``ingest``, ``generate``, ...).
      reason: snake_case reason code, prefixed by the stage.
      source: ``flickr30k_entities`` or ``visual_genome``.
      image_id: the image the input belongs to, when known.
      path: the input file, when the failure is about a file.
      item_id: the instruction id, for failures of LLM stages.
      detail: a human-readable explanation.
      raw_response: the raw LLM reply that could not be used, if any.
    """

    stage: str
    reason: str
    source: str
    image_id: str | None = None
    path: str | None = None
    item_id: str | None = None
    detail: str = ""
    raw_response: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def unit_key(self) -> str:
        """The input unit this failure accounts for (an image, else a file)."""
        if self.image_id is not None:
            return image_key(self.source, self.image_id)
        return f"file:{self.path}"


def pack(record: dict[str, Any]) -> bytes:
    """A record as one compressed bytes value (what a shuffle carries for every item of an image):
    a tenth of the memory the same record costs as nested dicts, a third of its pickle."""
    return zlib.compress(pickle.dumps(record, pickle.HIGHEST_PROTOCOL), 1)


def unpack(packed: bytes) -> dict[str, Any]:
    return pickle.loads(zlib.decompress(packed))


def stable_int(*parts: Any) -> int:
    """A deterministic integer from parts (no global RNG, no Python hash seed): the seed of every sampled choice."""
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "big")


def image_key(source: str, image_id: str) -> str:
    """The accounting key of one input image."""
    return f"{source}/{image_id}"


def annotation_record(
    *,
    image_id: str,
    source: str,
    width: int | None,
    height: int | None,
    image: str,
    captions: list[dict[str, Any]] | None = None,
    entities: list[dict[str, Any]] | None = None,
    regions: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Build a normalised annotation record with the contract's key order."""
    record = {
        "image_id": image_id,
        "source": source,
        "width": width,
        "height": height,
        "image": image,
        "captions": captions or [],
        "entities": entities or [],
        "regions": regions or [],
    }
    record.update(extra)
    return record


def to_json_line(record: Any) -> str:
    """Serialise a record (dict or dataclass with ``to_dict``) as one JSON line."""
    if hasattr(record, "to_dict"):
        record = record.to_dict()
    try:
        return orjson.dumps(record).decode("utf-8")  # 4x json.dumps; same JSON, compact separators
    except TypeError:  # what orjson refuses (e.g. integers beyond 64 bits): the standard library writes it
        return json.dumps(record, ensure_ascii=False, separators=(",", ":"))
