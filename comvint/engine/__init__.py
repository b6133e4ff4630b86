"""The offline engine: a small GQA-style question engine over the annotations' scene graph.

It answers a stage's call the way an endpoint does, from the stage name and the structured
context the call carries, with the JSON the stage's schema asks for. Modules: ``scene`` (things as
the annotations define them, what may be compared), ``program`` (question chains as clauses, and
whether every step matters), ``forms`` and ``realise`` (the English), ``rounds`` (what each stage
makes) and ``judge`` (an independent re-derivation of every clause from the raw record).
"""

from __future__ import annotations

import pickle
from collections import OrderedDict
from typing import Any

from comvint.engine import judge, rounds
from comvint.engine.scene import Scene, build_scene
from comvint.records import unpack

_SCENES: OrderedDict[bytes, Scene] = OrderedDict()
SCENE_CACHE = 64  # images whose scene a worker keeps (a stage gets the items of an image together, joined to its record)


def scene_of(ann: dict[str, Any] | bytes) -> Scene:
    """The scene of an annotation record (or of its pickle), built once per worker while it is in use.

    Keyed by the record's content, so two datasets that reuse an image id never share a scene.
    """
    key = ann if isinstance(ann, bytes) else pickle.dumps(ann, pickle.HIGHEST_PROTOCOL)
    if key in _SCENES:
        _SCENES.move_to_end(key)
        return _SCENES[key]
    things = _SCENES[key] = build_scene(unpack(key) if isinstance(ann, bytes) else ann)
    if len(_SCENES) > SCENE_CACHE:
        _SCENES.popitem(last=False)
    return things


def answer(stage: str, context: dict[str, Any]) -> dict[str, Any]:
    """The reply of one call: ``context`` holds the annotation record (``ann``, or its pickle) and what the stage is about."""
    things = scene_of(context["ann"])
    if stage in ("verify", "verify_reformulated"):
        ann = context["ann"] if isinstance(context["ann"], dict) else unpack(context["ann"])
        passed, evidence = judge.judge(context["item"], ann)
        return {"evidence": evidence, "verdict": "yes" if passed else "no"}
    if stage == "generate":
        return {"items": rounds.synthesize(things, context["family"], context.get("topic"), context["n"], context["key"])}
    if stage == "complicate":
        made = rounds.complicate(context["item"]["grounding"], things, context["key"])
        if made is None:
            return {"instruction": "", "answer": "", "grounding": [], "knowledge_type": "visual"}
        qa, kind = made
        return {"instruction": qa["instruction"], "answer": qa["answer"], "grounding": qa["grounding"], "knowledge_type": kind}
    if stage == "reformulate":
        return rounds.reformulate(context["item"]["grounding"], things, context["key"])
    raise ValueError(f"the offline engine has no stage {stage!r}")
