"""An independent checker of kept items against the real annotation files.

It shares no code with the engine: it parses Flickr30k Entities XML and Sentences files and the Visual
Genome JSON files itself, with its own geometry, and flags, per item, each defect a reader would
object to. ``flags(item)`` returns the defect kinds found (empty: clean).
"""

from __future__ import annotations

import json
import pathlib
import re
import xml.etree.ElementTree as ET

CLAUSE = re.compile(r"^(not )?(\w+)\(([^()]*)\)(?:=(\d+))?$")
POSITION = ("left_of", "right_of", "above", "below")
SIZE = ("larger", "smaller")
NUMBER_WORDS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}
VAGUE = {
    "many",
    "several",
    "group",
    "crowd",
    "groups",
    "crowds",
    "lots",
    "bunch",
    "some",
    "few",
    "couple",
    "team",
    "herd",
    "flock",
}
SCENERY = {
    "sky",
    "ground",
    "grass",
    "field",
    "floor",
    "wall",
    "ceiling",
    "road",
    "street",
    "sidewalk",
    "water",
    "ocean",
    "sea",
    "lake",
    "river",
    "beach",
    "sand",
    "snow",
    "dirt",
    "mountain",
    "mountains",
    "hill",
    "background",
    "area",
    "air",
    "park",
    "city",
    "stage",
    "room",
    "crowd",
    "trees",
    "building",
    "buildings",
}
COLOURS = {"red", "blue", "green", "yellow", "brown", "white", "black", "gray", "grey", "orange", "pink", "purple"}
SINGULAR_S = {"gas", "canvas", "lens", "upstairs", "news", "series", "species", "bus", "chess", "tennis"}
PLURAL_ONLY = {
    "jeans",
    "pants",
    "shorts",
    "glasses",
    "sunglasses",
    "trousers",
    "scissors",
    "clothes",
    "goggles",
    "sweatpants",
    "scrubs",
    "binoculars",
    "fatigues",
    "knickers",
    "tongs",
}
ENTITY = re.compile(r"\[/EN#(\d+)/([^\s]+) ([^\]]+)\]")


class Flickr:
    """One image of Flickr30k Entities: boxes per entity (0-based, exclusive), mentions and types, size."""

    def __init__(self, xml: bytes, sentences: str) -> None:
        root = ET.fromstring(xml)
        self.width = int(root.findtext("size/width"))
        self.height = int(root.findtext("size/height"))
        self.boxes: dict[str, list[list[int]]] = {}
        self.scene: set[str] = set()
        for obj in root.iter("object"):
            for name in obj.findall("name"):
                box = obj.find("bndbox")
                if box is not None:
                    b = [int(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
                    self.boxes.setdefault(name.text, []).append([b[0] - 1, b[1] - 1, b[2], b[3]])
                if obj.findtext("scene") == "1":
                    self.scene.add(name.text)
        self.mentions: dict[str, list[str]] = {}
        self.types: dict[str, set[str]] = {}
        for line in sentences.splitlines():
            for entity, types, text in ENTITY.findall(line):
                self.mentions.setdefault(entity, []).append(text.lower())
                self.types.setdefault(entity, set()).update(types.split("/"))

    def thing(self, tid: str) -> dict | None:
        e = tid.removeprefix("e:")
        if e not in self.boxes:
            return None
        return {
            "boxes": self.boxes[e],
            "texts": self.mentions.get(e, []),
            "scene": e in self.scene or "scene" in self.types.get(e, set()),
        }


class Genome:
    """One Visual Genome image: objects (id -> boxes, names, attributes), image size."""

    def __init__(self, image: dict, objects: dict, attributes: dict) -> None:
        self.width, self.height = image["width"], image["height"]
        attrs = {str(a["object_id"]): a.get("attributes", []) for a in attributes.get("attributes", [])}
        self.objects = {
            str(o["object_id"]): {
                "boxes": [[max(0, o["x"]), max(0, o["y"]), o["x"] + o["w"], o["y"] + o["h"]]],
                "texts": [n.lower() for n in o.get("names", [])],
                "scene": False,
                "attributes": attrs.get(str(o["object_id"]), []),
            }
            for o in objects["objects"]
        }

    def thing(self, tid: str) -> dict | None:
        return self.objects.get(tid.removeprefix("o:"))


def load_flickr(root: pathlib.Path, image_id: str) -> Flickr:
    return Flickr(
        (root / "Annotations" / f"{image_id}.xml").read_bytes(), (root / "Sentences" / f"{image_id}.txt").read_text()
    )


def load_genome(root: pathlib.Path) -> dict[str, Genome]:
    images = {str(i["image_id"]): i for i in json.loads((root / "image_data.json").read_text())}
    objects = {str(o["image_id"]): o for o in json.loads((root / "objects.json").read_text())}
    attributes = {str(a["image_id"]): a for a in json.loads((root / "attributes.json").read_text())}
    return {k: Genome(images[k], objects[k], attributes.get(k, {})) for k in objects}


def _area(b: list[int]) -> int:
    return max(0, b[2] - b[0]) * max(0, b[3] - b[1])


def _overlap(p: list[int], q: list[int]) -> float:
    inter = _area([max(p[0], q[0]), max(p[1], q[1]), min(p[2], q[2]), min(p[3], q[3])])
    return inter / max(min(_area(p), _area(q)), 1)


def _head(text: str) -> str:
    words = re.split(r"\b(?:in|on|with|of|at|wearing|holding|near|by|is|are)\b", text)[0].split()
    return words[-1] if words else ""


def _background(thing: dict, image) -> bool:
    return (
        thing["scene"]
        or any(_head(t) in SCENERY for t in thing["texts"])
        or any(_area(b) > 0.5 * image.width * image.height for b in thing["boxes"])
    )


def _centre(b: list[int], axis: int) -> float:
    return (b[axis] + b[axis + 2]) / 2


def _split(rel: str, a: dict, b: dict) -> bool:
    """A multi-box thing with boxes on both sides of the other."""
    axis = 0 if rel in ("left_of", "right_of") else 1
    sides = {_centre(p, axis) < _centre(q, axis) for p in a["boxes"] for q in b["boxes"]}
    return len(sides) > 1


def _count_ok(thing: dict, n: int) -> bool:
    words = [w for t in thing["texts"] for w in t.split()]
    stated = {NUMBER_WORDS[w] for w in words if w in NUMBER_WORDS}
    return not (set(words) & VAGUE) and stated == {n} and len(thing["boxes"]) == n


def _norm(option: str) -> str:
    words = [w for w in option.lower().split() if w not in ("a", "an", "the")]
    return " ".join(w[:-1] if w.endswith("s") and not w.endswith("ss") else w for w in words)


def flags(item: dict, image) -> set[str]:
    """The defect kinds of one kept item (see the module docstring)."""
    found: set[str] = set()
    clauses = [m for c in item.get("grounding") or [] if (m := CLAUSE.match(c))]
    steps = [m for m in clauses if not m.group(1) and m.group(2) in (*POSITION, *SIZE, "rel", "count")]
    for m in clauses:
        rel, args = m.group(2), [a.strip() for a in m.group(3).split(",")]
        things = [image.thing(a) for a in args if a[:2] in ("e:", "o:", "r:")]
        if any(t is None for t in things):
            found.add("unknown_thing")
            continue
        if rel in (*POSITION, *SIZE):
            a, b = things
            if _background(a, image) or _background(b, image):
                found.add("scene_comparison")
            if any(_overlap(p, q) > 0.3 for p in a["boxes"] for q in b["boxes"]):
                found.add("overlap_comparison")
            if rel in POSITION and (_split(rel, a, b) or _split(rel, b, a)):
                found.add("multi_box_split")
            if rel in SIZE and (len(a["boxes"]) > 1 or len(b["boxes"]) > 1):
                found.add("multi_box_split")
        if rel == "count":
            n = int(m.group(4))
            stated = next((k for k in range(1, 11) if _count_ok(things[0], k)), None)
            if stated is None or (stated == n) == bool(m.group(1)):
                found.add("count_against_captions")
    for k in range(1, len(steps)):
        before = [a.strip() for a in steps[k - 1].group(3).split(",")]
        pick = before[2] if steps[k - 1].group(2) == "rel" else before[0]
        if pick not in steps[k].group(3):
            found.add("unused_pick")
    if item["format"] == "multiple_choice" and len({_norm(o) for o in item["options"]}) < len(item["options"]):
        found.add("variant_option")
    question = item["instruction"]
    match = re.match(
        r"^(Is|Are) the ([a-z' -]+?) (further to|higher up|lower down|larger in|smaller in|made of|a kind "
        r"of|wearing|holding|sitting|standing)\b",
        question,
    )
    if match:
        head = _head(match.group(2))
        plural = (
            head in PLURAL_ONLY
            or (head.endswith("s") and not head.endswith(("ss", "us")) and head not in SINGULAR_S)
            or head.endswith("men")
            or head in ("children", "people", "feet", "teeth", "mice", "geese", "oxen", "dice")
        )
        if plural != (match.group(1) == "Are"):
            found.add("agreement")
    kinds = [m for m in clauses if not m.group(1) and m.group(2) == "kind"]
    if kinds and steps:
        asked = kinds[0].group(3).split(",")[0].strip()
        if steps[-1].group(2) == "rel" and steps[-1].group(3).split(",")[2].strip() == asked:
            found.add("kind_told_by_verb")  # "is what the man is wearing a kind of garment?"
        named = {a.strip() for s in steps for a in s.group(3).split(",") if a.strip()[:2] in ("e:", "o:", "r:")}
        if item["format"] == "multiple_choice" and len(named - {asked}) < len(item["options"]) - 1:
            found.add("kind_option_ruled_out")  # a kind no thing of the question has: out without looking
    asks = [m for m in clauses if not m.group(1) and m.group(2) == "colour"]
    if asks and steps and steps[-1].group(2) in (*POSITION, *SIZE):
        loser = image.thing(steps[-1].group(3).split(",")[1].strip())
        colour = asks[0].group(3).split(",")[1].strip()
        words = {w for t in loser["texts"] for w in t.split()} | {
            w for a in loser.get("attributes", []) for w in a.split()
        }
        if colour in words:
            found.add("text_only_answer")  # the other candidate has the same colour: the pick does not matter
    if asks and item["format"] != "bool" and COLOURS & set(re.findall(r"[a-z]+", question.lower())):
        found.add(
            "colour_in_question"
        )  # "what colour is whichever of the white wraps and the pink shirts ...": half told
    return found
