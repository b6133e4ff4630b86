"""The scene graph the offline engine asks about: boxed things with a head noun, number and name.

A thing is a Flickr30k entity (its most descriptive mention, all its boxes) or a Visual
Genome region (its phrase, its box). Relations between two things are read from their
boxes; one margin (:data:`MARGIN`) decides, for the generator and the judge alike, when a
relation is clear enough to ask about.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import re
from typing import Any

import inflect

Box = list[int]
MARGIN = 0.08  # a relation is asked about, and accepted by the judge, only with at least this margin
DETERMINERS = {"a", "an", "the", "some", "his", "her", "its", "their", "this", "that"}
NOT_NAMES = {"her", "his", "him", "she", "he", "it", "they", "them", "someone", "everyone", "something", "one", "each",
             "other", "person", "people"}
BREAKERS = {"in", "with", "wearing", "on", "of", "by", "under", "near", "next", "behind", "holding", "at", "from", "for",
            "above", "beside", "along", "while", "that", "who", "is", "are", "to", "and", "full", "parked", "lying",
            "sitting", "standing", "flying", "hanging", "folded", "burning"}
COLOURS = frozenset("red blue green yellow brown white black gray grey orange pink purple".split())
COUNT_WORDS = {"two": 2, "three": 3, "four": 4, "five": 5, "several": 0, "many": 0}
SINGULAR_S = {"bus", "glass", "grass", "dress", "canvas", "waves", "class", "sneakers", "shorts", "pants", "jeans"}
AXES = {
    "horizontal": ("left_of", "right_of"),
    "vertical": ("above", "below"),
    "size": ("larger", "smaller"),
}
INVERSE = {"left_of": "right_of", "right_of": "left_of", "above": "below", "below": "above", "larger": "smaller", "smaller": "larger"}


@functools.lru_cache(maxsize=1)
def inflector() -> inflect.engine:
    return inflect.engine()


@functools.lru_cache(maxsize=1)
def knowledge() -> dict[str, Any]:
    """The shipped knowledge table (what common objects are used for, made of, found in)."""
    return json.loads((pathlib.Path(__file__).parents[1] / "knowledge" / "objects.json").read_text())


@dataclasses.dataclass(frozen=True)
class Thing:
    """One boxed thing: ``phrase`` is its description without a leading determiner ("man in a blue apron")."""

    id: str
    phrase: str
    noun: str  # the head noun, singular ("man", "dog")
    plural: bool
    count: int  # boxes (a group "two dogs" has one box per dog)
    box: Box  # the union of its boxes
    obj: str | None  # its knowledge-table object, if any

    @property
    def name(self) -> str:
        return f"the {self.phrase}"

    @property
    def colour(self) -> str | None:
        """The colour its own description gives it ("brown dog": brown; "man in a blue apron": none of its own)."""
        words = self.phrase.split()
        return next((w for w in words[: head_index(words)] if w in COLOURS), None)


def head_index(words: list[str]) -> int:
    """Where a phrase's head noun is: the last word before its first preposition or participle."""
    return next((k for k, w in enumerate(words) if k > 0 and w in BREAKERS), len(words)) - 1


@functools.lru_cache(maxsize=8192)
def singular(word: str) -> tuple[str, bool]:
    """(singular form, was plural) of a noun."""
    if word in SINGULAR_S or word in knowledge()["objects"]:
        return word, word in ("waves", "sneakers")
    single = inflector().singular_noun(word)
    return (single, True) if single else (word, False)


def parse_phrase(text: str) -> tuple[str, str, bool, int, str] | None:
    """``"A man in a blue apron"`` -> ("man in a blue apron", "man", plural, counted, head as written); None if no name."""
    words = re.sub(r"\s+'s\b", "'s", text.lower()).replace(",", " ").split()
    while words and words[0] in DETERMINERS:
        words = words[1:]
    counted = COUNT_WORDS.get(words[0], 1) if words else 1
    body = [w for w in words if re.fullmatch(r"[a-z][a-z'-]*", w)]
    cut = next((k for k, w in enumerate(body) if w in ("is", "are", "was", "were")), len(body))
    body = body[:cut]  # "man is wearing sneakers" names a man
    if not body or body[0] in NOT_NAMES or len(body) > 8:
        return None
    head = body[head_index(body)]
    if head in NOT_NAMES or head in COUNT_WORDS or head.endswith("'s"):
        return None
    noun, plural = singular(head)
    return " ".join(body), noun, plural or counted != 1, counted, head


def union(boxes: list[Box]) -> Box:
    return [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]


def table_object(noun: str, head: str) -> str | None:
    """The knowledge-table object a head noun names (its plural or an alias folded), if any."""
    table = knowledge()
    for word in (head, noun):
        name = table["aliases"].get(word, word)
        if name in table["objects"]:
            return name
    return None


def _flickr_things(ann: dict[str, Any]) -> list[Thing]:
    mentions: dict[str, list[tuple[str, str, bool, int, str]]] = {}
    for caption in ann.get("captions", []):
        for phrase in caption["phrases"]:
            parsed = parse_phrase(phrase["text"])
            if parsed:
                mentions.setdefault(phrase["entity_id"], []).append(parsed)
    things = []
    for entity in ann.get("entities", []):
        options = mentions.get(entity["entity_id"])
        if not entity["boxes"] or entity["scene"] or not options:
            continue
        phrase, noun, plural, _, head = max(options, key=lambda o: (min(len(o[0].split()), 6), -len(o[0]), o[0]))
        things.append(Thing(f"e:{entity['entity_id']}", phrase, noun, plural, len(entity["boxes"]), union(entity["boxes"]),
                            table_object(noun, head)))
    return things


def _region_things(ann: dict[str, Any]) -> list[Thing]:
    things = []
    for region in ann.get("regions", []):
        parsed = parse_phrase(region["phrase"])
        if parsed:
            phrase, noun, plural, counted, head = parsed
            things.append(Thing(f"r:{region['region_id']}", phrase, noun, plural, counted, region["box"], table_object(noun, head)))
    return things


def build_scene(ann: dict[str, Any]) -> dict[str, Thing]:
    """Every nameable thing of one annotation record, by id; things whose name is not unique are left out."""
    things = _flickr_things(ann) + _region_things(ann)
    names: dict[str, int] = {}
    for thing in things:
        names[thing.phrase] = names.get(thing.phrase, 0) + 1
    return {t.id: t for t in things if names[t.phrase] == 1}


def _area(box: Box) -> int:
    return max(0, box[2] - box[0]) * max(0, box[3] - box[1])


def margin(rel: str, a: Box, b: Box) -> float:
    """Signed strength of ``rel(a, b)``: the centre distance as a share of the image extent, or the
    area difference as a share of the larger area (> 0: the relation holds)."""
    ax, ay, bx, by = (a[0] + a[2]) / 2, (a[1] + a[3]) / 2, (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
    extent = max(a[2], b[2], a[3], b[3], 1)
    area = max(_area(a), _area(b), 1)
    return {
        "left_of": (bx - ax) / extent, "right_of": (ax - bx) / extent,
        "above": (by - ay) / extent, "below": (ay - by) / extent,
        "larger": (_area(a) - _area(b)) / area, "smaller": (_area(b) - _area(a)) / area,
    }[rel]


def clear(rel: str, a: Thing, b: Thing) -> bool:
    """``rel(a, b)`` holds by at least the margin (the one test the generator and the judge share)."""
    return margin(rel, a.box, b.box) >= MARGIN
