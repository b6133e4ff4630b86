"""The annotation text a model reads: Flickr30k Entities captions with their boxes, or Visual Genome
region lines, merged and capped.

A real Visual Genome image has 50 to 250 regions, many of them the same object described twice
("man wearing a shirt" and "the man in a blue shirt" over nearly one box). Sent whole, they cost
about 18K characters on every call of every stage. So region lines are

1. **merged** when they denote one object: boxes overlapping by IoU >= ``MERGE_IOU`` and the same
   head word ("man wearing grey shirt" / "the man in a grey shirt"), compared with the group's first
   region (no chains); a merged line keeps up to two phrases, most informative first, and the first
   region's id (the id a reply may cite);
2. **capped** at ``max_regions`` lines, most informative first: greedily, the line whose phrases
   add the most content words not yet shown, ties by the larger box, then by region id;
3. printed in their original order, after the image size.
"""

from __future__ import annotations

import re
from typing import Any

from comvint.readers.flickr30k import convert_record

MERGE_IOU = 0.7
MAX_REGIONS = 40
PHRASES_PER_LINE = 2
FUNCTION_WORDS = frozenset(
    "a an the this that these those some his her its their of in on at to with and or is are has have by for from near "
    "next behind under over above below side part".split()
)
_WORD = re.compile(r"[a-z][a-z'-]*")
BREAK_WORDS = frozenset(
    "in on at with of by for from near next behind under over above below against beside is are was has have "
    "can that which who to be sits stands looks appears says reads shows hangs lies".split()
)


def content_words(phrase: str) -> frozenset[str]:
    """The words of a phrase that say something (lower case, function words out, a plural 's' dropped)."""
    return frozenset(
        w[:-1] if w.endswith("s") and len(w) > 3 and not w.endswith("ss") else w
        for w in _WORD.findall(phrase.lower())
        if w not in FUNCTION_WORDS
    )


def iou(a: list[int], b: list[int]) -> float:
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def head_word(phrase: str) -> str:
    """The word a phrase is about: the last word before its first preposition, verb or participle
    ("two computer towers sitting on the floor" -> "tower"), a plural 's' dropped."""
    words = _WORD.findall(phrase.lower())
    cut = next((k for k, w in enumerate(words) if k and (w in BREAK_WORDS or w.endswith("ing"))), len(words))
    head = words[cut - 1] if cut else ""
    return head[:-1] if head.endswith("s") and len(head) > 3 and not head.endswith("ss") else head


def same_object(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two regions that describe one object: nearly one box and the same head word."""
    return iou(a["box"], b["box"]) >= MERGE_IOU and head_word(a["phrase"]) == head_word(b["phrase"]) != ""


def merge_regions(regions: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Regions grouped by :func:`same_object` with a group's first region (no chains)."""
    groups: list[list[dict[str, Any]]] = []
    for region in regions:
        home = next((g for g in groups if same_object(g[0], region)), None)
        if home is None:
            groups.append([region])
        else:
            home.append(region)
    return groups


def _area(box: list[int]) -> int:
    return max(0, box[2] - box[0]) * max(0, box[3] - box[1])


def line_phrases(group: list[dict[str, Any]]) -> list[str]:
    """Up to ``PHRASES_PER_LINE`` distinct phrases of one object, the one with most content words first."""
    ranked = sorted(group, key=lambda r: (-len(content_words(r["phrase"])), group.index(r)))
    phrases: list[str] = []
    for region in ranked:
        phrase = " ".join(region["phrase"].split()).rstrip(" .")
        if phrase and not any(content_words(phrase) <= content_words(p) for p in phrases):
            phrases.append(phrase)
    return phrases[:PHRASES_PER_LINE] or [" ".join(group[0]["phrase"].split())]


def most_informative(groups: list[list[dict[str, Any]]], limit: int) -> list[int]:
    """Indexes of at most ``limit`` groups, chosen greedily by new content words, then box area, then order."""
    words = [frozenset().union(*(content_words(p) for p in line_phrases(g))) for g in groups]
    areas = [_area(g[0]["box"]) for g in groups]
    chosen: list[int] = []
    seen: set[str] = set()
    left = set(range(len(groups)))
    while left and len(chosen) < limit:
        best = min(left, key=lambda k: (-len(words[k] - seen), -areas[k], k))
        chosen.append(best)
        seen |= words[best]
        left.discard(best)
    return sorted(chosen)


def region_line(group: list[dict[str, Any]]) -> str:
    x1, y1, x2, y2 = group[0]["box"]
    return f"r:{group[0]['region_id']} {' / '.join(line_phrases(group))} X: {x1} Y: {y1} Width: {x2 - x1} Height: {y2 - y1}"


def size_line(ann: dict[str, Any]) -> str:
    return f"Image size: {ann['width']} x {ann['height']} pixels" if ann.get("width") and ann.get("height") else ""


def render(ann: dict[str, Any], max_regions: int = MAX_REGIONS) -> str:
    """The annotation text of one image, as every stage sends it."""
    head = size_line(ann)
    if ann["source"] == "visual_genome":
        groups = merge_regions(ann["regions"])
        body = "\n".join(region_line(groups[k]) for k in most_informative(groups, max_regions))
    else:
        ids = "\n".join(
            f"e:{e['entity_id']} = "
            + ", ".join(
                dict.fromkeys(
                    p["text"] for c in ann["captions"] for p in c["phrases"] if p["entity_id"] == e["entity_id"]
                )
            )[:200]
            for e in ann["entities"]
            if not e.get("no_box") and e.get("boxes")
        )
        body = convert_record(ann) + "\nEntity ids:\n" + ids
    return f"{head}\n{body}" if head else body
