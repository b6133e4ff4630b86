"""The offline engine: a deterministic, annotation-grounded question generator and judge.

In the spirit of GQA's question engine, every question is built from facts the
annotations (boxes, phrases) or the shipped knowledge table state, and carries
those facts as ``grounding`` clauses such as ``left_of(e:1,e:2)``,
``not larger(e:1,e:3)``, ``count(e:4)=2`` or ``fact(r:1385,car,used_for)``. The judge
re-evaluates every clause from the annotations, so answers are correct by
construction and a claim it cannot re-derive (or a relation too close to call)
is rejected. It never invents a fact the table does not hold.
"""

from __future__ import annotations

import functools
import hashlib
import json
import pathlib
import re
from typing import Any

Box = list[int]
_CLAUSE = re.compile(r"^(not )?(\w+)\(([^)]*)\)(?:=(\d+))?$")
AMBIGUOUS_FRACTION = 0.05
_DETERMINERS = {"a", "an", "the", "two", "some"}
_PRONOUNS = {"her", "his", "him", "she", "he", "it", "they", "them", "someone", "everyone", "its", "their"}
RELATION_WORDS = {
    "left_of": "to the left of",
    "right_of": "to the right of",
    "above": "higher up in the picture than",
    "below": "lower in the picture than",
    "larger": "larger in the picture than",
    "smaller": "smaller in the picture than",
}
INVERSE = {"left_of": "right_of", "right_of": "left_of", "above": "below", "below": "above", "larger": "smaller", "smaller": "larger"}
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def stable_int(*parts: Any) -> int:
    """A deterministic integer from parts (no global RNG, no Python hash seed)."""
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "big")


@functools.lru_cache(maxsize=1)
def knowledge() -> dict[str, Any]:
    """The shipped knowledge table (what common objects are used for, made of, found in)."""
    return json.loads((pathlib.Path(__file__).parent / "knowledge" / "objects.json").read_text())


def objects_in(phrase: str) -> list[str]:
    """Knowledge-table objects named in a phrase (aliases and plurals folded)."""
    table = knowledge()
    found = []
    for word in re.findall(r"[a-z]+", phrase.lower()):
        name = table["aliases"].get(word, word)
        if name in table["objects"] and name not in found:
            found.append(name)
    return found


# ---- the scene: named, boxed things of one annotation record ---------------------------------


def union(boxes: list[Box]) -> Box:
    return [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]


def scene(ann: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"e:<id>" | "r:<id>": {"name", "box", "count", "object"}}`` for one record."""
    things: dict[str, dict[str, Any]] = {}
    names: dict[str, str] = {}
    for caption in ann.get("captions", []):
        for phrase in caption["phrases"]:
            words = [w for w in phrase["text"].lower().split() if w not in _DETERMINERS]
            text = " ".join(words)
            current = names.get(phrase["entity_id"])
            if text and text not in _PRONOUNS and (current is None or len(text) < len(current)):
                names[phrase["entity_id"]] = text
    for entity in ann.get("entities", []):
        if entity["boxes"] and not entity["scene"] and entity["entity_id"] in names:
            things[f"e:{entity['entity_id']}"] = {"name": "the " + names[entity["entity_id"]], "box": union(entity["boxes"]), "count": len(entity["boxes"]), "object": None}
    seen: set[str] = set()
    for region in ann.get("regions", []):
        objs = [o for o in objects_in(region["phrase"]) if o not in seen]
        if objs:
            seen.add(objs[0])
            things[f"r:{region['region_id']}"] = {"name": "the " + objs[0], "box": region["box"], "count": 1, "object": objs[0]}
    return things


def _area(box: Box) -> int:
    return max(0, box[2] - box[0]) * max(0, box[3] - box[1])


def _center(box: Box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def relation_margin(rel: str, a: Box, b: Box) -> float:
    """Signed strength of ``rel(a, b)`` as a fraction of the larger extent (> 0: true)."""
    (ax, ay), (bx, by) = _center(a), _center(b)
    extent = max(a[2], b[2], a[3], b[3], 1)
    values = {
        "left_of": (bx - ax) / extent,
        "right_of": (ax - bx) / extent,
        "above": (by - ay) / extent,
        "below": (ay - by) / extent,
        "larger": (_area(a) - _area(b)) / max(_area(a), _area(b), 1),
        "smaller": (_area(b) - _area(a)) / max(_area(a), _area(b), 1),
    }
    return values[rel]


# ---- clauses: the grounding language and its evaluator -----------------------------------------


def clause(rel: str, *args: str, negated: bool = False, value: int | None = None) -> str:
    text = f"{'not ' if negated else ''}{rel}({','.join(args)})"
    return text if value is None else f"{text}={value}"


def check_clause(text: str, things: dict[str, dict[str, Any]]) -> tuple[bool, str]:
    """Re-derive one clause from the scene: ``(holds, evidence)``."""
    match = _CLAUSE.match(text.strip())
    if not match:
        return False, f"cannot read clause {text!r}"
    negated, rel, args, value = bool(match.group(1)), match.group(2), match.group(3).split(","), match.group(4)
    if any(a not in things for a in args[:2] if a.startswith(("e:", "r:"))):
        return False, f"{text}: refers to something not in the annotations"
    if rel == "count":
        got = things[args[0]]["count"]
        return got == int(value or -1), f"{things[args[0]]['name']} has {got} box(es)"
    if rel == "fact":
        thing, obj, field = args
        table = knowledge()["objects"].get(obj, {})
        ok = field in table and things[thing]["object"] == obj
        return ok, f"{obj} {field.replace('_', ' ')}: {table.get(field, 'unknown')}" if ok else f"no table fact {obj}.{field} for {thing}"
    if rel not in RELATION_WORDS:
        return False, f"unknown relation {rel}"
    a, b = things[args[0]], things[args[1]]
    margin = relation_margin(rel, a["box"], b["box"])
    if abs(margin) < AMBIGUOUS_FRACTION:
        return False, f"{a['name']} vs {b['name']}: too close to call ({margin:+.3f})"
    holds = (margin > 0) != negated
    return holds, f"{a['name']} {a['box']} vs {b['name']} {b['box']}: {rel} margin {margin:+.2f}"


def judge(grounding: list[str], things: dict[str, dict[str, Any]]) -> tuple[bool, str]:
    """All clauses must hold; the evidence lists each clause's check, verdict last."""
    if not grounding:
        return False, "no grounding clause to check the answer against"
    checks = [check_clause(c, things) for c in grounding]
    evidence = "; ".join(f"{c} -> {'ok' if ok else 'FAILS'} ({why})" for c, (ok, why) in zip(grounding, checks))
    return all(ok for ok, _ in checks), evidence


# ---- questions --------------------------------------------------------------------------------


def _pairs(things: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    keys = sorted(things, key=lambda k: (-_area(things[k]["box"]), k))
    return [(a, b) for i, a in enumerate(keys) for b in keys[i + 1 :]]


def _strongest(rels: tuple[str, ...], a: Box, b: Box) -> str:
    return max(rels, key=lambda r: relation_margin(r, a, b))


def relation_question(a: str, b: str, things: dict, kind: str) -> dict[str, Any] | None:
    """Left/right, above/below or size question about two things (None if too close)."""
    ta, tb = things[a], things[b]
    rels = {"horizontal": ("left_of", "right_of"), "vertical": ("above", "below"), "size": ("larger", "smaller")}[kind]
    rel = _strongest(rels, ta["box"], tb["box"])
    if relation_margin(rel, ta["box"], tb["box"]) < AMBIGUOUS_FRACTION / 2:
        return None
    question = {
        "horizontal": f"Looking at {ta['name']} and {tb['name']}, which one is further to the left?",
        "vertical": f"Which is higher up in the picture: {ta['name']} or {tb['name']}?",
        "size": f"Which takes up more of the picture, {ta['name']} or {tb['name']}?",
    }[kind]
    winner = ta if rel in ("left_of", "above", "larger") else tb
    answer = f"{winner['name'].capitalize()}: {ta['name']} is {RELATION_WORDS[rel]} {tb['name']}."
    return {"instruction": question, "answer": answer, "grounding": [clause(rel, a, b)]}


def count_question(a: str, things: dict) -> dict[str, Any]:
    thing = things[a]
    n = thing["count"]
    return {
        "instruction": f"How many separate regions of the picture show {thing['name']}?",
        "answer": f"{NUMBERS[n] if n < len(NUMBERS) else n}: {thing['name']} appears in {n} separate places.",
        "grounding": [clause("count", a, value=n)],
    }


def fact_question(key: str, things: dict, field: str) -> dict[str, Any]:
    thing = things[key]
    obj = thing["object"]
    value = knowledge()["objects"][obj][field]
    ask = {"used_for": "typically used for", "made_of": "usually made of", "found_in": "usually found in"}[field]
    verb = {"used_for": "is typically used for", "made_of": "is usually made of", "found_in": "is usually found in"}[field]
    return {
        "instruction": f"What is {thing['name']} in this picture {ask}?",
        "answer": f"{thing['name'].capitalize()} {verb} {value}.",
        "grounding": [f"fact({key},{obj},{field})"],
        "knowledge_topic": knowledge()["objects"][obj]["topic"],
    }


def synthesize(ann: dict[str, Any], topic: str | None = None, n: int = 3) -> list[dict[str, Any]]:
    """Up to ``n`` grounded question/answer pairs for one annotation record."""
    things = scene(ann)
    if ann["source"] == "visual_genome":
        keyed = sorted((k for k in things), key=lambda k: (things[k]["object"] != topic, k))
        fields = ("used_for", "made_of", "found_in")
        return [fact_question(k, things, fields[i % 3]) for i, k in enumerate(keyed[:n])]
    out: list[dict[str, Any]] = []
    multi = [k for k in sorted(things) if things[k]["count"] > 1]
    if multi:
        out.append(count_question(multi[0], things))
    for (a, b), kind in zip(_pairs(things), ("horizontal", "size", "vertical") * 10):
        q = relation_question(a, b, things, kind)
        if q and len(out) < n:
            out.append(q)
    return [dict(q, knowledge_topic="") for q in out]


def complicate(item: dict[str, Any], ann: dict[str, Any], round_no: int) -> dict[str, Any] | None:
    """A two-hop version: the item's fact plus a size relation to a third thing."""
    things = scene(ann)
    first = item.get("grounding") or []
    anchors = [a for c in first for a in re.findall(r"[er]:\w+", c)]
    if not anchors or anchors[0] not in things:
        return None
    subject = anchors[0]
    others = sorted((k for k in things if k not in anchors), key=lambda k: stable_int(item["id"], round_no, k))
    for other in others:
        rel = _strongest(("larger", "smaller"), things[subject]["box"], things[other]["box"])
        if relation_margin(rel, things[subject]["box"], things[other]["box"]) >= AMBIGUOUS_FRACTION / 2:
            break
    else:
        return None
    s, o = things[subject], things[other]
    question = f"{item['instruction'].rstrip('?')}? Also, is {s['name']} {RELATION_WORDS['larger']} {o['name']}?"
    answer = f"{item['answer']} And {'yes' if rel == 'larger' else 'no'}: {s['name']} is {RELATION_WORDS[rel]} {o['name']}."
    return {"instruction": question, "answer": answer, "grounding": first + [clause(rel, subject, other)]}


def reformulate(item: dict[str, Any], ann: dict[str, Any]) -> dict[str, Any] | None:
    """Bool yes/no (entity swapped) and 4-way choice (distractors from other things of the image)."""
    things = scene(ann)
    main = (item.get("grounding") or [""])[0]
    match = _CLAUSE.match(main)
    if not match or match.group(1):
        return None
    rel, args = match.group(2), match.group(3).split(",")
    if rel in RELATION_WORDS:
        a, b = things[args[0]]["name"], things[args[1]]["name"]
        positive = f"Is {a} {RELATION_WORDS[rel]} {b}?"
        negative = f"Is {b} {RELATION_WORDS[rel]} {a}?"
        others = [t["name"] for k, t in sorted(things.items()) if k not in args[:2]]
        pool = [f"{b.capitalize()} is {RELATION_WORDS[rel]} {a}."] + [f"{o.capitalize()} is {RELATION_WORDS[rel]} {b}." for o in others]
        correct = f"{a.capitalize()} is {RELATION_WORDS[rel]} {b}."
    elif rel == "fact":
        obj, field = args[1], args[2]
        table = knowledge()["objects"]
        value = table[obj][field]
        swap = [t["object"] for t in things.values() if t["object"] not in (None, obj) and table[t["object"]][field] != value]
        if not swap:
            return None
        ask = field.replace("_", " ")
        positive = f"Is the {obj} in the picture typically {ask} {value}?"
        negative = f"Is the {swap[0]} in the picture typically {ask} {value}?"
        correct = value
        pool = sorted({table[o][field] for o in table if table[o][field] != value}, key=lambda v: stable_int(item["id"], v))
    else:
        return None
    distractors = list(dict.fromkeys(p for p in pool if p != correct))[:3]
    if len(distractors) < 3:
        return None
    return {"bool_positive": positive, "bool_negative": negative, "mc_question": item["instruction"], "correct_option": correct, "distractors": distractors}
