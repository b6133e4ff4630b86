"""The offline engine: a small GQA-style question engine over the annotations' scene graph.

It answers a stage's call the way an endpoint does, from the stage name and the structured
context the call carries, with the JSON the stage's schema asks for. Modules: ``scene`` (things as
the annotations define them, what may be compared), ``program`` (question chains as clauses, and
whether every step matters), ``forms`` and ``realise`` (the English), ``rounds`` (what each stage
makes) and ``judge`` (an independent re-derivation of every clause from the raw record).
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from typing import Any

from comvint.engine import judge, rounds
from comvint.engine.scene import Scene, build_scene
from comvint.records import pack, unpack

# images a worker keeps the scene and judge's reading of (a stage gets an image's items together, joined to its record)
CACHE = 64


@functools.lru_cache(maxsize=CACHE)
def _scene(packed: bytes) -> Scene:
    return build_scene(unpack(packed))


@functools.lru_cache(maxsize=CACHE)
def _reading(packed: bytes) -> judge.Record:
    return judge.Record(unpack(packed))


_keys: OrderedDict[int, tuple[dict[str, Any], bytes]] = OrderedDict()  # id(record) -> (the record, its packed bytes)
_keys_lock = threading.Lock()


def _packed(ann: dict[str, Any] | bytes) -> bytes:
    """The record as the caches key it: its packed bytes, so two datasets that reuse an image id never share a
    scene. A stage hands every item of an image the same record object: it is packed once while in use."""
    if isinstance(ann, bytes):
        return ann
    with _keys_lock:
        known = _keys.get(id(ann))
        if known is not None and known[0] is ann:
            _keys.move_to_end(id(ann))
            return known[1]
    key = pack(ann)
    with _keys_lock:
        _keys[id(ann)] = (ann, key)  # the record is held while listed: its id cannot be reused meanwhile
        while len(_keys) > CACHE:
            _keys.popitem(last=False)
    return key


def scene_of(ann: dict[str, Any] | bytes) -> Scene:
    """The scene of an annotation record (or of its packed bytes), built once per worker while it is in use."""
    return _scene(_packed(ann))


def clear_caches() -> None:
    _scene.cache_clear()
    _reading.cache_clear()
    with _keys_lock:
        _keys.clear()


def answer(stage: str, context: dict[str, Any]) -> dict[str, Any]:
    """The reply of one call: ``context`` holds the annotation record (``ann``, or its packed bytes) and what the stage
    is about."""
    if stage in ("verify", "verify_reformulated"):
        passed, evidence = judge.judge(context["item"], _reading(_packed(context["ann"])))
        return {"evidence": evidence, "verdict": "yes" if passed else "no"}
    things = scene_of(context["ann"])
    if stage == "generate":
        return {
            "items": rounds.synthesize(things, context["family"], context.get("topic"), context["n"], context["key"])
        }
    if stage == "complicate":
        made = rounds.complicate(context["item"]["grounding"], things, context["key"])
        if made is None:
            return {"instruction": "", "answer": "", "grounding": [], "knowledge_type": "visual"}
        qa, kind = made
        return {
            "instruction": qa["instruction"],
            "answer": qa["answer"],
            "grounding": qa["grounding"],
            "knowledge_type": kind,
        }
    if stage == "reformulate":
        return rounds.reformulate(context["item"]["grounding"], things, context["key"])
    raise ValueError(f"the offline engine has no stage {stage!r}")
