"""The offline judge: re-derives every clause from the raw annotation record, with geometry of its own.

It does not use the generator's scene: it reads boxes, mentions, object names, attributes and
relationships from the record itself, and applies the rules the generator is meant to follow (no
scene or background thing compared, nothing compared with what it overlaps or contains, a multi-box
thing only when all its boxes lie on one side, sizes of single boxes, counts only where the captions
state that number, every step mattering, values that differ among candidates). So a generator that
breaks a rule is caught here, not re-approved by its own code.
"""

from __future__ import annotations

import re
from typing import Any

from comvint.engine.scene import MATERIALS, kind_of, same_answer, synset_facts, synset_of

MARGIN = 0.08
SIZE_RATIO = 1.6
OVERLAP = 0.1
COMPARE = {"left_of": (0, -1), "right_of": (0, 1), "above": (1, -1), "below": (1, 1)}
WORDS_BEFORE = re.compile(
    r"\b(in|on|with|of|at|by|near|under|wearing|holding|behind|next|beside|from|while|is|are|that|who)\b"
)
NUMBERS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}
VAGUE = (
    "many",
    "several",
    "some",
    "group",
    "crowd",
    "lots",
    "bunch",
    "few",
    "multiple",
    "couple",
    "team",
    "pair",
    "herd",
    "flock",
)
SETTINGS = {
    "sky",
    "ground",
    "grass",
    "field",
    "floor",
    "wall",
    "walls",
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
    "air",
    "park",
    "forest",
    "woods",
    "city",
    "stage",
    "room",
    "shore",
    "pool",
    "track",
    "path",
    "yard",
    "background",
    "area",
    "crowd",
    "building",
    "buildings",
    "trees",
    "leaves",
    "window",
    "windows",
}
COLOUR_WORDS = {
    "red",
    "blue",
    "green",
    "yellow",
    "brown",
    "white",
    "black",
    "gray",
    "grey",
    "orange",
    "pink",
    "purple",
    "tan",
    "beige",
    "silver",
    "gold",
}
_CLAUSE = re.compile(r"^(not )?(\w+)\(([^()]*)\)(?:=(\d+))?$")


def _box_area(b: list[int]) -> int:
    return max(0, b[2] - b[0]) * max(0, b[3] - b[1])


def _inter(p: list[int], q: list[int]) -> int:
    return _box_area([max(p[0], q[0]), max(p[1], q[1]), min(p[2], q[2]), min(p[3], q[3])])


PAIRS = {
    "glasses",
    "sunglasses",
    "shorts",
    "pants",
    "jeans",
    "trousers",
    "goggles",
    "scissors",
    "overalls",
    "tights",
    "clothes",
}


def _singular(word: str) -> str:
    if word in PAIRS:
        return word
    for suffix, repl in (("ies", "y"), ("ves", "f"), ("ches", "ch"), ("shes", "sh"), ("sses", "ss"), ("s", "")):
        if word.endswith(suffix) and len(word) > len(suffix) + 2 and not word.endswith(("ss", "us")):
            return word[: -len(suffix)] + repl
    return {
        "men": "man",
        "women": "woman",
        "children": "child",
        "people": "person",
        "feet": "foot",
        "teeth": "tooth",
    }.get(word, word)


def _lead(text: str) -> list[str]:
    """The words of a mention before its first preposition or verb, determiners and numbers dropped."""
    head = WORDS_BEFORE.split(text.lower().replace(",", " "))[0]
    return [
        w for w in re.findall(r"[a-z'-]+", head) if w not in ("a", "an", "the", "his", "her", "their", "its", "some")
    ]


class Record:
    """What the judge reads of one annotation record: each thing's boxes, texts, types, attributes, synsets."""

    def __init__(self, ann: dict[str, Any]) -> None:
        self.ann = ann
        self.things: dict[str, dict[str, Any]] = {}
        boxes: list[list[int]] = []
        for e in ann.get("entities", []):
            texts = [
                p["text"] for c in ann.get("captions", []) for p in c["phrases"] if p["entity_id"] == e["entity_id"]
            ]
            types = {
                t
                for c in ann.get("captions", [])
                for p in c["phrases"]
                if p["entity_id"] == e["entity_id"]
                for t in p.get("types", [])
            }
            if e.get("scene"):
                types.add("scene")
            self.things[f"e:{e['entity_id']}"] = {
                "boxes": [list(b) for b in e["boxes"]],
                "texts": texts,
                "types": types,
                "attributes": [],
                "synsets": [],
            }
            boxes += e["boxes"]
        objects = ann.get("objects") or []
        for o in objects:
            same = [
                x
                for x in objects
                if (set(x["synsets"]) & set(o["synsets"]) or set(x["names"]) & set(o["names"]))
                and _inter(x["box"], o["box"])
                >= 0.5 * (_box_area(x["box"]) + _box_area(o["box"]) - _inter(x["box"], o["box"]))
            ]
            self.things[f"o:{o['object_id']}"] = {
                "boxes": [[max(0, v) for v in x["box"]] for x in same],
                "texts": o["names"],
                "types": set(),
                "attributes": [a for x in same for a in x.get("attributes", [])],
                "synsets": o["synsets"],
            }
            boxes.append(o["box"])
        for r in ann.get("regions", []):
            self.things[f"r:{r['region_id']}"] = {
                "boxes": [[max(0, v) for v in r["box"]]],
                "texts": [r["phrase"]],
                "types": set(),
                "attributes": [],
                "synsets": [],
            }
            boxes.append(r["box"])
        self.width = ann.get("width") or max((b[2] for b in boxes), default=1)
        self.height = ann.get("height") or max((b[3] for b in boxes), default=1)

    def heads(self, tid: str) -> set[str]:
        return {_singular(lead[-1]) for text in self.things[tid]["texts"] if (lead := _lead(text))}

    def synsets(self, tid: str) -> set[str | None]:
        thing = self.things[tid]
        return set(thing["synsets"]) or {synset_of(h) for h in self.heads(tid)}

    def background(self, tid: str) -> bool:
        thing = self.things[tid]
        raw = {lead[-1] for text in thing["texts"] if (lead := _lead(text))}
        if "scene" in thing["types"] or raw & SETTINGS:
            return True
        if any(
            facts and facts["lexfile"] in ("noun.location", "noun.object", "noun.substance", "noun.phenomenon")
            for facts in map(synset_facts, self.synsets(tid))
        ):
            return True
        return any(_box_area(b) >= 0.4 * self.width * self.height for b in thing["boxes"])

    def overlapping(self, a: str, b: str) -> bool:
        return any(
            _inter(p, q) > OVERLAP * max(min(_box_area(p), _box_area(q)), 1)
            for p in self.things[a]["boxes"]
            for q in self.things[b]["boxes"]
        )

    def compare(self, rel: str, a: str, b: str) -> tuple[bool, str]:
        """Does ``rel(a, b)`` hold clearly, by the judge's own geometry? With why."""
        if a == b or a not in self.things or b not in self.things:
            return False, "refers to something not in the annotations"
        if self.background(a) or self.background(b):
            return False, "compares a scene or background thing"
        if self.overlapping(a, b):
            return False, "compares things that overlap, contain one another or share a box"
        pa, pb = self.things[a]["boxes"], self.things[b]["boxes"]
        if rel in ("larger", "smaller"):
            if len(pa) != 1 or len(pb) != 1:
                return False, "compares the size of a thing of several boxes"
            big, small = (pa[0], pb[0]) if rel == "larger" else (pb[0], pa[0])
            return _box_area(big) >= SIZE_RATIO * max(
                _box_area(small), 1
            ), f"areas {_box_area(pa[0])} vs {_box_area(pb[0])}"
        axis, sign = COMPARE[rel]
        extent = self.width if axis == 0 else self.height
        for p in pa:
            for q in pb:
                first, second = (p, q) if sign < 0 else (q, p)
                gap = ((second[axis] + second[axis + 2]) - (first[axis] + first[axis + 2])) / 2
                if gap < MARGIN * extent or first[axis] > second[axis] or first[axis + 2] > second[axis + 2]:
                    return False, f"boxes {p} and {q} are not clearly {rel.replace('_', ' ')}"
        return True, f"every box of {a} is {rel.replace('_', ' ')} every box of {b}"

    def colours(self, tid: str) -> set[str]:
        thing = self.things[tid]
        words = {w for text in thing["texts"] for w in _lead(text)} | {
            w for a in thing["attributes"] for w in a.split()
        }
        return words & COLOUR_WORDS

    def materials(self, tid: str) -> set[str]:
        thing = self.things[tid]
        words = {w for text in thing["texts"] for w in _lead(text)[:-1]} | {
            w for a in thing["attributes"] for w in a.split()
        }
        return {MATERIALS[w] for w in words if w in MATERIALS}

    def kind(self, tid: str) -> str | None:
        """The WordNet category every name of the thing agrees on (its annotated synsets, else its head nouns)."""
        thing = self.things[tid]
        return kind_of(set(thing["synsets"]), self.heads(tid), bool(thing["types"] & {"people", "animals"}))

    def value(self, ask: str, tid: str) -> str | None:
        if ask == "kind":
            return self.kind(tid)
        found = self.colours(tid) if ask == "colour" else self.materials(tid)
        return found.pop() if len(found) == 1 else None

    def count(self, tid: str) -> int | None:
        """The number the captions state for a thing, when they all agree and match its boxes."""
        thing = self.things[tid]
        stated = set()
        for text in thing["texts"]:
            words = text.lower().split()
            if any(w in VAGUE for w in words):
                return None
            stated |= {NUMBERS[w] for w in words[:2] if w in NUMBERS}
        return stated.pop() if len(stated) == 1 and len(thing["boxes"]) in stated else None

    def related(self, subject: str, pred: str, obj: str) -> bool:
        """The annotations state the relation: a caption reads "<subject> <pred> <object>", or a VG relationship
        does."""
        pred = pred.replace("_", " ")
        for rel in self.ann.get("relationships") or []:
            if f"o:{rel['subject_id']}" == subject and f"o:{rel['object_id']}" == obj:
                return True
        for caption in self.ann.get("captions", []):
            phrases = sorted(caption["phrases"], key=lambda p: p["first_word_index"])
            tokens = caption["text"].lower().split()
            for a, b in zip(phrases, phrases[1:], strict=False):
                between = tokens[a["first_word_index"] + len(a["text"].split()) : b["first_word_index"]]
                if (
                    f"e:{a['entity_id']}" == subject
                    and f"e:{b['entity_id']}" == obj
                    and pred.split()[0][:3] in " ".join(between)
                ):
                    return True
        return False


def _parse(text: str) -> tuple[bool, str, list[str], int | None] | None:
    m = _CLAUSE.match(text.strip())
    return (
        (
            bool(m.group(1)),
            m.group(2),
            [a.strip() for a in m.group(3).split(",")],
            int(m.group(4)) if m.group(4) else None,
        )
        if m
        else None
    )


def check(clause: tuple[bool, str, list[str], int | None], rec: Record) -> tuple[bool, str]:
    negated, rel, args, value = clause
    if any(a.startswith(("e:", "o:", "r:")) and a not in rec.things for a in args):
        return False, "refers to something not in the annotations"
    if rel in ("left_of", "right_of", "above", "below", "larger", "smaller"):
        a, b = args
        if negated:  # the claim is false because the reverse holds
            return rec.compare(rel, b, a)
        return rec.compare(rel, a, b)
    if rel == "count":
        n = rec.count(args[0])
        if n is None:
            return False, "the captions do not state one number for it that its boxes match"
        return (n != value) if negated else (n == value), f"the captions and boxes say {n}"
    if rel in ("colour", "material", "kind"):
        own = rec.value(rel, args[0])
        if own is None:
            return False, f"the annotations give no single {rel} of {args[0]}"
        same = (
            own.lower() == args[1].lower() if not negated else same_answer(rel, own, args[1])
        )  # a "no" must be clearly wrong
        return (not same) if negated else same, f"{args[0]} {rel}: {own}"
    if rel == "rel":
        stated = rec.related(args[0], args[1], args[2])
        if negated:
            return not stated and not rec.overlapping(args[0], args[2]), "no such relation, and the two are apart"
        return stated, "the annotations state it" if stated else "the annotations do not state it"
    return False, f"unknown clause {rel}"


def _steps_matter(clauses: list[tuple[bool, str, list[str], int | None]], rec: Record) -> tuple[bool, str]:
    """Had any comparison before the last (or before an asked property) picked its other thing, the answer changes."""
    steps = [
        c
        for c in clauses
        if not c[0] and c[1] in ("left_of", "right_of", "above", "below", "larger", "smaller", "rel", "count")
    ]
    ask = next((c for c in clauses if not c[0] and c[1] in ("colour", "material", "kind")), None)

    def pick(k: int) -> str:
        return steps[k][2][2] if steps[k][1] == "rel" else steps[k][2][0]

    def answer(focus: str) -> str | None:
        return rec.value(ask[1], focus) if ask else focus

    actual = answer(pick(len(steps) - 1)) if steps else None
    for k, step in enumerate(steps):
        if step[1] in ("rel", "count") or (k == len(steps) - 1 and not ask):
            continue
        focus = step[2][1]
        for later in range(k + 1, len(steps)):
            rel, (a, b) = steps[later][1], steps[later][2]
            other = b if a == pick(later - 1) else a
            if rec.compare(rel, focus, other)[0]:
                continue
            if rec.compare(rel, other, focus)[0]:
                focus = other
                continue
            return False, f"with the other pick at step {k + 1} the answer is not defined"
        alternative = answer(focus)
        if (
            alternative is None
            or actual is None
            or (same_answer(ask[1], alternative, actual) if ask else alternative == actual)
        ):
            return False, f"step {k + 1} does not matter: the other pick gives the same answer"
    return True, ""


def _not_told(
    clauses: list[tuple[bool, str, list[str], int | None]], rec: Record, record: dict[str, Any]
) -> tuple[bool, str]:
    """The question's words must not give its answer away: no kind of a relation's object (the verb names it:
    "what the man is wearing" is a garment), and no kind option that no thing the question names has."""
    positive = [c for c in clauses if not c[0]]
    steps = [c for c in positive if c[1] not in ("colour", "material", "kind")]
    ask = next((c for c in positive if c[1] == "kind"), None)
    if ask is None:
        return True, ""
    if steps and steps[-1][1] == "rel" and steps[-1][2][2] == ask[2][0]:
        return False, f"the verb '{steps[-1][2][1]}' tells the kind of what it names"
    if record.get("format") == "multiple_choice":
        named = {rec.kind(a) for c in steps for a in c[2] if a in rec.things} - {None}
        told = [
            c[2][1]
            for c in clauses
            if c[0] and c[1] == "kind" and not any(same_answer("kind", c[2][1], n) for n in named)
        ]
        if told:
            return False, f"no thing the question names is {told[0]}: the option is ruled out by the words"
    return True, ""


def _names(rec: Record, tid: str) -> set[str]:
    return {re.sub(r"\s+'s\b", "'s", " ".join(t.lower().split())) for t in rec.things[tid]["texts"]}


def _mentions(text: str, rec: Record, tid: str) -> bool:
    """An answer names a thing when its text is (a part of) one of that thing's mentions or names."""
    said = re.sub(r"^(the|a|an) ", "", text.lower().strip().rstrip("."))
    pattern = re.compile(rf"(^|\s){re.escape(said)}($|\s)")
    return bool(said) and (any(pattern.search(n) for n in _names(rec, tid)) or said in rec.heads(tid))


def judge(record: dict[str, Any], rec: Record) -> tuple[bool, str]:
    """(passed, evidence) for one record against the judge's reading of its image's annotations: every clause,
    every step mattering, the answer and the options."""
    grounding = list(record.get("grounding") or [])
    clauses = [_parse(c) for c in grounding]
    if not grounding or any(c is None for c in clauses):
        return False, f"cannot read the clauses {grounding}"
    checks = [check(c, rec) for c in clauses]
    evidence = "; ".join(
        f"{g} -> {'ok' if ok else 'FAILS'} ({why})" for g, (ok, why) in zip(grounding, checks, strict=True)
    )
    if not all(ok for ok, _ in checks):
        return False, evidence
    positive = [c for c in clauses if not c[0]]
    ok, why = _steps_matter(positive, rec)
    if not ok:
        return False, f"{evidence}; {why}"
    ok, why = _not_told(clauses, rec, record)
    if not ok:
        return False, f"{evidence}; {why}"
    fmt, answer = record.get("format", "open_ended"), str(record.get("answer", ""))
    if fmt == "bool":
        expected = "no" if clauses[-1][0] else "yes"
        return (
            answer.lower() == expected,
            evidence + ("" if answer.lower() == expected else f"; the clauses say {expected}"),
        )
    ask = next((c for c in positive if c[1] in ("colour", "material", "kind")), None)
    last = [c for c in positive if c[1] not in ("colour", "material", "kind")][-1]
    short = answer.split(". ")[0].strip().rstrip(".")
    if ask:
        good = short.lower() == ask[2][1].lower()
    elif last[1] == "count":
        good = short.lower() == _number_word(last[3])
    else:
        winner = last[2][2] if last[1] == "rel" else last[2][0]
        loser = None if last[1] == "rel" else last[2][1]
        good = _mentions(short, rec, winner) and (loser is None or not _mentions(short, rec, loser))
    if not good:
        return False, f"{evidence}; the clauses do not give the answer {short!r}"
    if fmt == "multiple_choice":
        options = [re.sub(r"^(the|a|an) ", "", o.lower()) for o in record.get("options") or []]
        if len({_stem(o) for o in options}) != len(options):
            return False, f"{evidence}; two options are one answer {record.get('options')}"
        if len([c for c in clauses if c[0]]) + 1 < len(options):
            return False, f"{evidence}; a distractor has no clause that shows it wrong"
    return True, evidence


def _stem(text: str) -> str:
    return " ".join(_singular(w) for w in text.split())


def _number_word(n: int | None) -> str:
    words = {v: k for k, v in NUMBERS.items()}
    return words.get(n or -1, str(n))
