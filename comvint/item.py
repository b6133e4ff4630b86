"""The item that flows between the method's stages, typed; and the annotation record it is about.

An :class:`Instruction` is the contract's instruction record (``docs/contract.md``) plus three private
fields the job uses on the way and never writes: :func:`public` is what is written. The image's
:data:`Annotation` record never travels inside an item: each stage is handed ``(item, annotation)``
(joined by image in the Beam layer, once per image per stage).
"""

from __future__ import annotations

import hashlib
from typing import Any, TypedDict

Annotation = dict[str, Any]  # one normalised annotation record per image (schema: docs/contract.md)
PRIVATE_PREFIX = "_"


class Verification(TypedDict, total=False):
    passed: bool | None
    evidence: str
    inherited_from: str


class Instruction(TypedDict, total=False):
    """One instruction record, as stages make and pass it (``total=False``: ``options``, ``answer_index`` and
    ``image_stages`` are optional, and so are the private fields)."""

    id: str
    image_id: str
    source: str  # flickr30k_entities | visual_genome
    image: str
    family: str  # cross_modal | outside_knowledge
    format: str  # open_ended | bool | multiple_choice
    instruction: str
    answer: str
    options: list[str]
    answer_index: int
    round: int
    parent_id: str | None
    knowledge_type: str | None
    knowledge_topic: str | None
    verification: Verification | None
    llm: dict[str, str]
    grounding: list[str]
    image_stages: list[str] | None
    # Private: never written (see public()).
    _unit: str  # the physical image (dedup compares items of one image, whichever dataset named it)
    _parent_instruction: str  # what a complication rewrote, and its answer: the elimination rules and
    _parent_answer: str  # the verifier read them


def public(item: Instruction) -> dict[str, Any]:
    """What is written of an item: every field but the private ones."""
    return {k: v for k, v in item.items() if not k.startswith(PRIVATE_PREFIX)}


def with_unit(item: Instruction) -> dict[str, Any]:
    """The public record and its image unit (what the filters and dedup need, nothing private else)."""
    return {**public(item), "_unit": item["_unit"]}


def stable_id(*parts: Any) -> str:
    """A record id from what defines it: the same input, settings and replies give the same id on every run."""
    return hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).hexdigest()[:20]
