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
import re
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


# What most packed records share: their field names and typical values, pickled as records are. zlib
# starts from this preset dictionary (every worker builds the same bytes from these literals), so a
# small record compresses to about two thirds of what zlib alone makes of it. Changing it changes
# nothing persisted: packed bytes live only inside a run's shuffles.
_PRESET_ITEM = {
    "id": "0123456789abcdef0123",
    "image_id": "1000092795",
    "source": "flickr30k_entities",
    "image": "flickr30k-images/1000092795.jpg",
    "family": "cross_modal",
    "format": "open_ended",
    "instruction": "Which is further to the left in the picture: the man or the dog?",
    "answer": "The man.",
    "round": 1,
    "parent_id": "0123456789abcdef0123",
    "knowledge_type": "visual",
    "knowledge_topic": "",
    "verification": {
        "passed": True,
        "evidence": "left_of(e:1,e:2) -> ok (the man [1, 2, 3, 4] vs the dog [5, 6, 7, 8])",
    },
    "llm": {"backend": "offline", "model": "offline", "prompt_version": "comvint-prompts"},
    "grounding": ["left_of(e:1,e:2)", "not fact(r:1,door,used_for)"],
    "_unit": "visual_genome:1000092795",
    "_topic": "Sports and Recreation",
    "options": ["A", "B"],
    "duplicate_of": None,
    "stage": "dedup",
    "reason": "template_repeat",
}
_PRESET_FLICKR = {
    "image_id": "1000092795",
    "source": "flickr30k_entities",
    "width": 500,
    "height": 333,
    "image": "flickr30k-images/1000092795.jpg",
    "captions": [
        {
            "text": "A man in a red shirt walks a dog in the park .",
            "phrases": [
                {"text": "A man", "entity_id": "123", "types": ["people"], "first_word_index": 0},
                {"text": "the park", "entity_id": "124", "types": ["scene"], "first_word_index": 9},
            ],
        }
    ],
    "entities": [
        {"entity_id": "123", "boxes": [[166, 288, 218, 478]], "scene": False, "no_box": False},
        {"entity_id": "124", "boxes": [], "scene": True, "no_box": False},
    ],
    "regions": [],
}
_PRESET_VG = {
    "image_id": "1",
    "source": "visual_genome",
    "width": None,
    "height": None,
    "image": "visual_genome/1.jpg",
    "captions": [],
    "entities": [],
    "regions": [
        {"region_id": "15566", "phrase": "a man on the beach", "box": [182, 89, 585, 473]},
        {"region_id": "15567", "phrase": "wooden door", "box": [225, 236, 322, 287]},
    ],
    "flickr_id": None,
}
_PRESETS = (_PRESET_VG, _PRESET_FLICKR, _PRESET_ITEM)
_PRESET = b"".join(pickle.dumps(o, pickle.HIGHEST_PROTOCOL) for o in _PRESETS)
_PRESET_JSON = b"\n".join(orjson.dumps(o) for o in _PRESETS)


def _compress(data: bytes, preset: bytes) -> bytes:
    packer = zlib.compressobj(1, zdict=preset)
    return packer.compress(data) + packer.flush()


def _decompress(data: bytes, preset: bytes) -> bytes:
    unpacker = zlib.decompressobj(zdict=preset)
    return unpacker.decompress(data) + unpacker.flush()


def pack(record: dict[str, Any]) -> bytes:
    """A record as one compressed bytes value (what a shuffle carries): a shuffle holds each value as one
    object, and a record costs several times the memory of its pickle as nested dicts, and about three
    times its packed size (zlib with a preset dictionary of what records share)."""
    return _compress(pickle.dumps(record, pickle.HIGHEST_PROTOCOL), _PRESET)


def unpack(packed: bytes) -> dict[str, Any]:
    return pickle.loads(_decompress(packed, _PRESET))


def pack_text(text: bytes) -> bytes:
    """UTF-8 text (JSON lines) compressed the same way, with a preset dictionary of records as JSON."""
    return _compress(text, _PRESET_JSON)


def unpack_text(packed: bytes) -> bytes:
    return _decompress(packed, _PRESET_JSON)


def stable_int(*parts: Any) -> int:
    """A deterministic integer from parts (no global RNG, no Python hash seed): the seed of every sampled choice."""
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "big")


_PLAIN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
_PLAIN_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}")


def plain_id(image_id: str) -> bool:
    """An image id that can name files and keys: letters, digits and ``_ . : -``, no path, no ``..``."""
    return bool(_PLAIN_ID.fullmatch(image_id)) and ".." not in image_id


def safe_relative(path: str) -> bool:
    """A relative path of plain parts (no absolute path, no ``..``, no backslash, no empty part)."""
    parts = path.split("/")
    return bool(path) and all(_PLAIN_PART.fullmatch(p) and p not in (".", "..") for p in parts)


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
