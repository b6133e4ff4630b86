"""The report's sample: which images it shows, their boxes, and one card per record of theirs.

The sample is chosen by image, not by record, so every card's lineage (round 0,
each complication, each reformulation, with the judge's evidence) is in it: all
records of an image stay together. Images are ranked by a seeded hash of their
accounting unit, so the same run always shows the same images, whatever the
number of workers.
"""

from __future__ import annotations

import re
from typing import Any

from comvint.records import VISUAL_GENOME, Failure, image_key, stable_int

MAX_SIDE = 100_000  # the largest coordinate drawn (real images are a few thousand pixels)
MAX_BOXES = 100  # boxes drawn per image (a filtered VG image may have hundreds of regions)
MAX_TEXT = 600  # characters kept of evidence and failure details
_IDS = re.compile(r"\b([eor]:[^,()\s;]+)")
CARD_FIELDS = (
    "id",
    "parent_id",
    "family",
    "format",
    "round",
    "instruction",
    "answer",
    "options",
    "answer_index",
    "knowledge_type",
    "knowledge_topic",
    "reason",
    "stage",
    "duplicate_of",
    "image_stages",
)


def rank(seed: int, unit: str) -> int:
    """The image's place in the sample order (smallest first)."""
    return stable_int(seed, "report", unit)


def geometry(ann: dict[str, Any]) -> dict[str, Any]:
    """What the report draws of one annotation record: its size and labelled boxes."""
    boxes: list[dict[str, Any]] = []
    if ann["source"] == VISUAL_GENOME:  # its objects first: what the engine's questions refer to
        boxes = [
            {"id": f"o:{o['object_id']}", "label": " / ".join(o["names"])[:80], "box": o["box"]}
            for o in ann.get("objects") or []
        ]
        boxes += [{"id": f"r:{r['region_id']}", "label": r["phrase"][:80], "box": r["box"]} for r in ann["regions"]]
    else:
        labels: dict[str, str] = {}
        for caption in ann["captions"]:
            for phrase in caption["phrases"]:
                labels.setdefault(phrase["entity_id"], phrase["text"][:80])
        for entity in ann["entities"]:
            label = labels.get(entity["entity_id"], "")
            boxes += [{"id": f"e:{entity['entity_id']}", "label": label, "box": box} for box in entity["boxes"]]
    width, height = bounded(ann.get("width"), MAX_SIDE), bounded(ann.get("height"), MAX_SIDE)
    drawn = [{**b, "box": [bounded(v, MAX_SIDE) for v in b["box"]]} for b in boxes[:MAX_BOXES]]
    return {
        "unit": image_key(ann["source"], ann["image_id"]),
        "source": ann["source"],
        "image_id": ann["image_id"],
        "image": ann["image"],
        "width": width,
        "height": height,
        "boxes": drawn,
    }


def bounded(value: Any, limit: int) -> int:
    """A coordinate the page can draw: an integer in [0, limit] (a box at x = 10^200 or NaN is drawn at the edge)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0
    return int(min(max(number, 0.0), limit)) if number == number else 0


def grounded_ids(grounding: list[str] | None) -> list[str]:
    """Entity, object and region ids (``e:…``, ``o:…``, ``r:…``) named by a record's grounding clauses."""
    found: list[str] = []
    for clause in grounding or []:
        found += [i for i in _IDS.findall(clause) if i not in found]
    return found


def _clip(text: Any) -> Any:
    return text[:MAX_TEXT] + "…" if isinstance(text, str) and len(text) > MAX_TEXT else text


def card(record: Any, sink: str) -> dict[str, Any]:
    """One record of ``instructions``, ``rejected`` or ``failures`` as the browser shows it."""
    fields = record.to_dict() if isinstance(record, Failure) else record
    out = {k: fields[k] for k in CARD_FIELDS if fields.get(k) is not None}
    for k in ("instruction", "answer"):  # a rejected record may hold what no filter has bounded
        if k in out:
            out[k] = _clip(out[k])
    if "options" in out:
        out["options"] = [_clip(o) for o in out["options"][:8]]
    out["outcome"] = {"instructions": "kept", "rejected": "rejected", "failures": "failed"}[sink]
    if sink == "failures":
        out["id"] = fields.get("item_id") or f"{fields['source']}/{fields['image_id']}/{fields['stage']}"
        out["evidence"] = _clip(fields.get("detail"))
    elif "id" not in out:  # an image the method did not use (filtered before synthesis)
        out["id"] = f"{fields['source']}/{fields['image_id']}/{fields['stage']}"
    else:
        out["evidence"] = _clip(fields.get("evidence") or (fields.get("verification") or {}).get("evidence"))
        verification = fields.get("verification") or {}
        out["verified"] = verification.get("passed")
    out["ids"] = grounded_ids(fields.get("grounding"))
    return {k: v for k, v in out.items() if v is not None}


def entry(image: dict[str, Any], cards: list[dict[str, Any]]) -> dict[str, Any]:
    """One image of the sample with its cards in a stable order."""
    order = sorted(cards, key=lambda c: (c.get("round", -1), c.get("format", ""), c["outcome"], c["id"]))
    return {**image, "records": order}
