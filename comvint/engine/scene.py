"""The scene the offline engine asks about: things as the annotations define them, and the relations
between them that are safe to ask about.

A thing is a Flickr30k entity (every box of its chain, its name from its mentions, its types) or a
Visual Genome object (``objects.json``: names, synsets, attributes, merged when two annotations
denote one object); without objects, a region phrase parsed into a noun phrase. A comparison is
made only between two things that are not scene or background, do not overlap, contain or share a
box, and whose boxes all lie on one side of each other; sizes only of single boxes.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import json
import pathlib
import re
from typing import Any

Box = tuple[int, int, int, int]
MARGIN = 0.08  # a position is asked about only when every box pair differs by this share of the image
SIZE_RATIO = 1.6  # a size only when one box is this many times the area of the other
OVERLAP = 0.1  # two things whose boxes overlap by more than this share of the smaller box are never compared
BACKGROUND_SHARE = 0.4  # a thing covering this share of the image is background
DETERMINERS = {"a", "an", "the", "some", "his", "her", "its", "their", "this", "that", "these", "those", "another"}
NUMBERS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}
MANY = {
    "many",
    "several",
    "some",
    "group",
    "groups",
    "crowd",
    "crowds",
    "lots",
    "lot",
    "bunch",
    "few",
    "multiple",
    "couple",
    "team",
    "pair",
    "herd",
    "flock",
    "line",
    "row",
    "number",
    "all",
    "other",
    "others",
    "various",
    "both",
}
NOT_NAMES = {
    "her",
    "his",
    "him",
    "she",
    "he",
    "it",
    "they",
    "them",
    "someone",
    "something",
    "one",
    "each",
    "other",
    "person",
    "people",
    "thing",
    "things",
    "part",
    "side",
    "front",
    "back",
    "top",
    "bottom",
    "edge",
    "area",
    "picture",
    "image",
    "photo",
    "view",
    "this",
    "that",
    "background",
    "foreground",
    "middle",
    "center",
    "left",
    "right",
    "end",
    "piece",
    "object",
    "scene",
    "more",
    "same",
    "colors",
    "colours",
    "color",
    "colour",
}
BREAKERS = {
    "in",
    "with",
    "wearing",
    "on",
    "of",
    "by",
    "under",
    "near",
    "next",
    "behind",
    "holding",
    "at",
    "from",
    "for",
    "above",
    "beside",
    "along",
    "while",
    "that",
    "who",
    "which",
    "is",
    "are",
    "was",
    "were",
    "to",
    "and",
    "or",
    "has",
    "have",
    "had",
    "says",
    "reads",
    "can",
    "be",
    "being",
    "looks",
    "look",
    "sits",
    "stands",
    "hangs",
    "into",
    "onto",
    "over",
    "around",
    "through",
    "against",
    "across",
    "between",
    "inside",
    "outside",
    "out",
    "up",
    "down",
    "off",
    "as",
    "like",
    "than",
    "there",
    "here",
    "where",
    "when",
    "not",
    "no",
    "but",
    "very",
}
BACKGROUND = {
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
    "pavement",
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
    "hills",
    "air",
    "land",
    "park",
    "forest",
    "woods",
    "city",
    "town",
    "stage",
    "room",
    "shore",
    "surface",
    "court",
    "pool",
    "ice",
    "track",
    "trail",
    "path",
    "yard",
    "lawn",
    "landscape",
    "weather",
    "day",
    "night",
    "sunlight",
    "light",
    "shadow",
    "shade",
    "fog",
    "cloud",
    "clouds",
    "outdoors",
    "outside",
    "area",
    "building",
    "buildings",
    "crowd",
    "audience",
    "pier",
    "dock",
    "bridge",
    "background",
    "scene",
    "wave",
    "waves",
    "parking",
    "lot",
    "hillside",
    "desert",
    "countryside",
    "market",
    "restaurant",
    "office",
    "kitchen",
    "store",
    "shop",
    "gym",
    "church",
    "station",
    "stadium",
    "arena",
    "rink",
    "pitch",
    "zoo",
    "leaves",
    "foliage",
    "vegetation",
    "trees",
    "bushes",
    "tile",
    "tiles",
    "carpet",
    "rug",
    "window",
    "windows",
}
ING_NOUNS = {
    "clothing",
    "building",
    "ceiling",
    "railing",
    "ring",
    "king",
    "string",
    "wing",
    "painting",
    "sling",
    "swing",
    "icing",
}
COLOURS = frozenset(
    "red blue green yellow brown white black gray grey orange pink purple tan beige silver gold".split()
)
MATERIALS = {
    "wooden": "wood",
    "wood": "wood",
    "metal": "metal",
    "metallic": "metal",
    "steel": "steel",
    "iron": "iron",
    "glass": "glass",
    "plastic": "plastic",
    "brick": "brick",
    "stone": "stone",
    "concrete": "concrete",
    "leather": "leather",
    "cloth": "cloth",
    "cotton": "cotton",
    "wool": "wool",
    "woolen": "wool",
    "paper": "paper",
    "rubber": "rubber",
    "ceramic": "ceramic",
    "porcelain": "porcelain",
    "straw": "straw",
    "wicker": "wicker",
    "denim": "denim",
    "silk": "silk",
    "marble": "marble",
    "cement": "cement",
    "tin": "tin",
    "aluminum": "aluminum",
}
SINGULAR_S = {
    "bus",
    "canvas",
    "news",
    "lens",
    "gas",
    "series",
    "species",
    "tennis",
    "physics",
    "walrus",
    "cactus",
    "octopus",
    "bonus",
    "circus",
    "campus",
}  # singular nouns ending in s (those ending in ss are found by their ending)
PAIR_NOUNS = {
    "shorts",
    "pants",
    "jeans",
    "trousers",
    "glasses",
    "sunglasses",
    "goggles",
    "scissors",
    "overalls",
    "tights",
    "leggings",
    "clothes",
    "sweatpants",
    "scrubs",
    "binoculars",
    "fatigues",
    "knickers",
    "tongs",
    "pliers",
    "trunks",
    "briefs",
    "panties",
    "slacks",
    "pajamas",
    "pyjamas",
    "suspenders",
    "headphones",
    "earphones",
    "earmuffs",
    "khakis",
    "capris",
    "boxers",
    "dungarees",
    "chaps",
}


@functools.lru_cache(maxsize=1)
def inflector() -> Any:
    """inflect's engine, imported on first use: its import instruments every function with typeguard (seconds),
    which a job that only ingests, or a worker that runs no engine stage, never needs."""
    import inflect

    return inflect.engine()


@functools.lru_cache(maxsize=1)
def wordnet() -> dict[str, Any]:
    """The shipped WordNet 3.0 table (``tools/build_wordnet_table.py``): lemma -> synset, synset -> facts."""
    path = pathlib.Path(__file__).parents[1] / "knowledge" / "wordnet.json.gz"
    return json.loads(gzip.decompress(path.read_bytes()))


def synset_facts(synset: str | None) -> dict[str, Any] | None:
    """``{"category", "lexfile", "parts", "substances", "hypernyms"}`` of a WordNet synset, or None."""
    table = wordnet()
    row = table["synsets"].get(synset or "")
    if row is None:
        return None
    category = table["categories"][row[0]] if row[0] >= 0 else None
    return {
        "category": category,
        "lexfile": table["lexfiles"][row[1]],
        "parts": row[2],
        "substances": row[3],
        "hypernyms": row[4],
    }


def lemma_category(noun: str) -> str | None:
    """The category a bare noun names: its first physical sense's, unless its senses disagree ("plant")."""
    table = wordnet()
    row = table["lemmas"].get(noun)
    return table["categories"][row[1]] if row and row[1] >= 0 else None


def made_thing(noun: str) -> bool:
    """One of the noun's first physical senses is an artifact ("mouse" is also a device, "mug" a cup)."""
    row = wordnet()["lemmas"].get(noun)
    return bool(row and row[2])


def kind_of(synsets: set[str], nouns: set[str], living_typed: bool = False) -> str | None:
    """The WordNet category of a thing: the one its annotated synsets share, else the one all its names name
    (None if they disagree, one is unknown, or it only restates the name: "a lamp is a kind of lamp").

    A living kind (a person, an animal, a plant) is not given to a name that can also be a made thing unless the
    annotators typed the thing people or animals (``living_typed``): Visual Genome's synsets are machine-chosen,
    and read a desk's "mouse" as a mammal and a "mug" or a "calculator" as a person."""
    found = (
        {(synset_facts(s) or {}).get("category") for s in synsets} if synsets else {lemma_category(n) for n in nouns}
    )
    category = found.pop() if len(found) == 1 else None
    if category in LIVING and not living_typed and any(made_thing(n) for n in nouns):
        return None
    return None if category is None or category.split()[-1] in nouns else category


MATERIAL_FAMILY = {
    "steel": "metal",
    "iron": "metal",
    "tin": "metal",
    "aluminum": "metal",
    "cement": "concrete",
    "cotton": "cloth",
    "wool": "cloth",
    "silk": "cloth",
    "denim": "cloth",
    "porcelain": "ceramic",
    "wicker": "straw",
}


def same_answer(ask: str, a: str | None, b: str | None) -> bool:
    """Whether two values of an asked property are one answer to a reader: equal, a spelling of each other
    ("gray"/"grey"), one a kind of the other ("a garment" is clothing; steel is a metal)."""
    if a is None or b is None:
        return a is b
    a, b = a.lower(), b.lower()
    if ask == "kind":
        table = wordnet()
        labels, ancestry = table["categories"], table["category_ancestors"]
        related = {labels[j] for k, label in enumerate(labels) if label in (a, b) for j in ancestry[k]}
        return a == b or a in related or b in related
    if ask == "material":
        return MATERIAL_FAMILY.get(a, a) == MATERIAL_FAMILY.get(b, b)
    return a == b or {a, b} == {"gray", "grey"}


def in_lexfile(lexfile: str, nouns: set[str], synsets: set[str] = frozenset()) -> bool:
    """Any name or sense of the thing is in this WordNet lexicographer file."""
    senses = set(synsets) | {synset_of(n) for n in nouns}
    return any((synset_facts(s) or {}).get("lexfile") == lexfile for s in senses)


def body_part(nouns: set[str], synsets: set[str] = frozenset()) -> bool:
    """A body part (``noun.body``): named without its owner ("the feet", "the head of his opponent", "the hair"),
    it does not say whose, so it is never asked about."""
    return in_lexfile("noun.body", nouns, synsets)


def person(nouns: set[str], synsets: set[str] = frozenset()) -> bool:
    """A person (``noun.person``): a colour word before a person's name ("a white male") is no colour of anything."""
    return in_lexfile("noun.person", nouns, synsets)


def synset_of(noun: str) -> str | None:
    """The first physical WordNet sense of a (singular) head noun."""
    row = wordnet()["lemmas"].get(noun)
    return row[0] if row else None


@dataclasses.dataclass(frozen=True)
class Thing:
    """One object of the image: ``name`` is its noun phrase without a determiner ("man in a blue apron")."""

    id: str
    name: str
    noun: str  # the head noun, singular
    plural: bool  # the name's grammatical number ("the dark hair" is singular though it has two boxes)
    boxes: tuple[Box, ...]
    synset: str | None
    colour: str | None  # the colour the annotation gives the thing itself (not its clothes)
    material: str | None  # what the annotation says it is made of ("wooden door": wood)
    background: bool
    count: int | None  # how many there are, when every annotation of it agrees; None otherwise
    category: str | None = None  # its WordNet category, when every name the annotations give it agrees

    @property
    def the(self) -> str:
        return f"the {self.name}"


@dataclasses.dataclass(frozen=True)
class Scene:
    """The things of one image by id, the image size, and the relations the annotations state."""

    things: dict[str, Thing]
    width: int
    height: int
    relations: tuple[tuple[str, str, str], ...]  # (subject id, predicate as "-ing" phrase, object id)


def union(boxes: tuple[Box, ...] | list[Box]) -> Box:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def area(box: Box) -> int:
    return max(0, box[2] - box[0]) * max(0, box[3] - box[1])


@functools.lru_cache(maxsize=16384)
def singular(word: str) -> tuple[str, bool]:
    """(singular form, was plural) of a noun."""
    if word in PAIR_NOUNS:
        return word, True
    if word in SINGULAR_S or word.endswith("ss"):
        return word, False
    single = inflector().singular_noun(word)
    if not single or single == word or single.endswith("u"):
        return word, False  # "asparagus" is a noun of its own, not the plural of "asparagu"
    return single, True


def words_of(text: str) -> list[str]:
    return re.sub(r"\s+'s\b", "'s", text.lower()).replace(",", " ").replace(".", " ").split()


def noun_phrase(text: str, clause_ok: bool = True) -> tuple[str, str, bool, int | None] | None:
    """``"A man in a blue apron"`` -> (name, singular head, plural, stated number); None if it names nothing.

    A clause is cut where its verb starts ("the sign says" names a sign; "man is wearing sneakers" a man);
    the head is the last word before the first preposition, verb or participle, and must be a WordNet noun.
    """
    words = words_of(text)
    while words and words[0] in DETERMINERS:
        words = words[1:]
    number = NUMBERS.get(words[0]) if words else None
    if any(w in MANY for w in words[:3]):
        number = 0
    body = []
    for w in words:
        if not re.fullmatch(r"[a-z][a-z'-]*", w):
            break
        if clause_ok is False and w in ("is", "are", "has", "have"):
            return None
        body.append(w)
    cut = next(
        (k for k, w in enumerate(body) if k > 0 and (w in BREAKERS or w.endswith("ing") and w not in ING_NOUNS)),
        len(body),
    )
    head_words = body[:cut]
    if body and (
        body[0] in BREAKERS
        or body[0].endswith("ly")
        or body[0] in ("closeup", "close-up", "shot")
        or head_words
        and (head_words[-1] in COLOURS or head_words[-1] in MATERIALS)
    ):
        return None  # "in distance", "brown": no noun phrase
    if not head_words or len(head_words) > 4 or head_words[0] in NOT_NAMES:
        return None
    if any(w in DETERMINERS or w in NUMBERS or w == "one" for w in head_words[1:]):
        return None  # two phrases run together ("a van one man"): no name of one thing
    head = head_words[-1]
    if head in NOT_NAMES or head in NUMBERS or head in MANY or head.endswith("'s") or "'" in head:
        return None
    noun, plural = singular(head)
    if number and number > 1 and not plural:
        return None  # "two accordion", "three tiered cake": the number does not count this noun
    if head in PAIR_NOUNS and body[cut : cut + 1] == ["of"]:  # "glasses of wine" are glasses, not spectacles
        noun = inflector().singular_noun(head) or head
    if synset_of(noun) is None and synset_of(head) is None:
        return None
    tail = body[cut:]
    keep_tail = (
        len(tail) > 1  # a preposition with its object ("shadows of 5 men" stops at the digit: "shadows")
        and tail[0] in ("in", "with", "wearing", "holding", "on", "of")
        and len(body) <= 7
        and all(re.fullmatch(r"[a-z][a-z-]*", w) for w in tail)
        and not set(tail) & {"is", "are", "has", "have", "says", "reads", "can"}
    )
    name = " ".join(body if keep_tail else head_words)
    return name, noun, plural or bool(number and number > 1), number


def _pre_head_colour(name: str, noun: str) -> str | None:
    words = name.split()
    head = next((k for k, w in enumerate(words) if singular(w)[0] == noun), len(words))
    found = {w for w in words[:head] if w in COLOURS}
    return found.pop() if len(found) == 1 else None


def _image_size(ann: dict[str, Any], boxes: list[Box]) -> tuple[int, int]:
    width = ann.get("width") or max((b[2] for b in boxes), default=1)
    height = ann.get("height") or max((b[3] for b in boxes), default=1)
    return max(int(width), 1), max(int(height), 1)


def is_background(
    noun: str, name: str, boxes: tuple[Box, ...], width: int, height: int, types: set[str] = frozenset()
) -> bool:
    """Scene, setting or surface: the ``scene`` type, a background head noun, or a box over much of the image."""
    if "scene" in types or noun in BACKGROUND or name.split()[-1] in BACKGROUND:
        return True
    facts = synset_facts(synset_of(noun))
    if facts and facts["lexfile"] in ("noun.location", "noun.object", "noun.substance", "noun.phenomenon"):
        return True
    return (
        any(area(b) >= BACKGROUND_SHARE * width * height for b in boxes) or area(union(boxes)) >= 0.6 * width * height
    )


# ---- Flickr30k Entities ----------------------------------------------------------------------------


def _flickr_things(ann: dict[str, Any], width: int, height: int) -> list[Thing]:
    mentions: dict[str, list[tuple[str, str, bool, int | None]]] = {}
    types: dict[str, set[str]] = {}
    texts: dict[str, list[str]] = {}
    for caption in ann.get("captions", []):
        for phrase in caption["phrases"]:
            texts.setdefault(phrase["entity_id"], []).append(phrase["text"])
            types.setdefault(phrase["entity_id"], set()).update(phrase.get("types", []))
            parsed = noun_phrase(phrase["text"])
            mentions.setdefault(phrase["entity_id"], []).append(parsed if parsed else ("", "", False, None))
    things = []
    for entity in ann.get("entities", []):
        options = [m for m in mentions.get(entity["entity_id"], []) if m[0]]
        if not entity["boxes"] or entity.get("scene") or entity.get("no_box") or not options:
            continue
        boxes = tuple(tuple(b) for b in entity["boxes"])
        name, noun, plural, _ = max(options, key=lambda o: (min(len(o[0].split()), 5), -len(o[0]), o[0]))
        numbers = {m[3] for m in mentions[entity["entity_id"]]}
        stated = {NUMBERS[w] for text in texts.get(entity["entity_id"], []) for w in words_of(text) if w in NUMBERS}
        vague = any(w in MANY for text in texts.get(entity["entity_id"], []) for w in words_of(text))
        count = stated.pop() if len(stated) == 1 and not vague and 0 not in numbers and len(boxes) > 1 else None
        count = count if count == len(boxes) else None
        colours = {_pre_head_colour(m[0], m[1]) for m in options}
        people = "people" in types.get(entity["entity_id"], set()) or person({m[1] for m in options})
        colour = colours.pop() if len(colours) == 1 and not people else None
        nouns = {m[1] for m in mentions[entity["entity_id"]]}  # "" for a mention that names nothing: no kind then
        if "bodyparts" in types.get(entity["entity_id"], set()) or body_part(nouns):
            continue
        category = kind_of(set(), nouns, bool(types.get(entity["entity_id"], set()) & {"people", "animals"}))
        if category is not None and not fits_types(category, types.get(entity["entity_id"], set())):
            category = None  # WordNet's sense disagrees with what the annotators said the thing is
        background = any(
            is_background(m[1], m[0], boxes, width, height, types.get(entity["entity_id"], set())) for m in options
        )
        things.append(
            Thing(
                f"e:{entity['entity_id']}",
                name,
                noun,
                plural,
                boxes,
                synset_of(noun),
                colour,
                None,
                background,
                count,
                category,
            )
        )
    return things


VERBS_ING = re.compile(r"^(?:is |are )?([a-z]+ing)(?: (on|in|with|at|into|onto|over|under|from|to|near|behind))?$")
INFLECTED = {
    "wears": "wearing",
    "holds": "holding",
    "rides": "riding",
    "carries": "carrying",
    "eats": "eating",
    "watches": "watching",
    "throws": "throwing",
    "pushes": "pushing",
    "pulls": "pulling",
    "plays": "playing",
    "uses": "using",
    "drives": "driving",
    "reads": "reading",
    "walks": "walking",
    "catches": "catching",
    "kicks": "kicking",
    "hits": "hitting",
    "feeds": "feeding",
    "climbs": "climbing",
    "wear": "wearing",
    "hold": "holding",
    "ride": "riding",
    "carry": "carrying",
    "eat": "eating",
    "watch": "watching",
}


POSTURES = {
    "standing",
    "sitting",
    "walking",
    "running",
    "posing",
    "lying",
    "laying",
    "waiting",
    "smiling",
    "laughing",
    "dancing",
    "talking",
    "looking",
    "kneeling",
    "leaning",
    "crouching",
    "squatting",
}


def predicate(text: str) -> str | None:
    """A relation worded for "what is X <predicate>?": "holding", "sitting on"; None for other relations."""
    words = text.lower().split()
    if words and words[0] in INFLECTED:
        words = [INFLECTED[words[0]], *words[1:]]
    match = VERBS_ING.match(" ".join(words))
    if not match or match.group(2) == "with" and match.group(1) in POSTURES:
        return None  # "standing with her feet" says how, not what with
    return " ".join(g for g in match.groups() if g)


TYPE_CATEGORIES = {  # Flickr30k Entities types -> the WordNet categories they allow
    "people": {"a person"},
    "animals": {"a bird", "a fish", "an insect", "a mammal", "a reptile", "an animal"},
    "clothing": {"footwear", "headwear", "a garment", "clothing", "jewelry", "a covering", "a bag"},
    "bodyparts": {"a body part"},
    "instruments": {"a musical instrument"},
    "vehicles": {"a motor vehicle", "an aircraft", "a boat or ship", "a train", "public transport", "a vehicle"},
}


LIVING = TYPE_CATEGORIES["people"] | TYPE_CATEGORIES["animals"] | {"a tree", "a flower", "a plant"}


def fits_types(category: str, types: set[str]) -> bool:
    """A WordNet category agrees with the annotators' types: a "person" only for people, and so on."""
    allowed = set().union(*(TYPE_CATEGORIES.get(t, set()) for t in types)) if types else set()
    if types & set(TYPE_CATEGORIES):
        return category in allowed
    return category not in set().union(*TYPE_CATEGORIES.values())


def _flickr_relations(ann: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(subject entity, predicate, object entity) where a caption reads "<phrase> <verb> <phrase>" and the
    subject is people or animals that no preposition governs ("a man in [a shirt] taking ..." is not the shirt's
    act)."""
    found = []
    for caption in ann.get("captions", []):
        tokens = caption["text"].lower().split()
        phrases = sorted(caption["phrases"], key=lambda p: p["first_word_index"])
        for a, b in zip(phrases, phrases[1:], strict=False):
            if not set(a.get("types", [])) & {"people", "animals"} or (
                a["first_word_index"] > 0 and tokens[a["first_word_index"] - 1] in BREAKERS
            ):
                continue
            start = a["first_word_index"] + len(a["text"].split())
            between = " ".join(tokens[start : b["first_word_index"]])
            pred = predicate(between)
            if pred and a["entity_id"] != b["entity_id"]:
                found.append((f"e:{a['entity_id']}", pred, f"e:{b['entity_id']}"))
    return found


# ---- Visual Genome -----------------------------------------------------------------------------------


def iou(a: Box, b: Box) -> float:
    inter = area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    return inter / max(area(a) + area(b) - inter, 1)


def _merge_objects(objects: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Groups of annotations that denote one object: the same synset or name and a box overlap (IoU) of 0.5 or more."""
    groups: list[list[dict[str, Any]]] = []
    for obj in objects:
        key = set(obj["synsets"]) or set(obj["names"])
        for group in groups:
            if any(
                (key & (set(o["synsets"]) or set(o["names"]))) and iou(tuple(o["box"]), tuple(obj["box"])) >= 0.5
                for o in group
            ):
                group.append(obj)
                break
        else:
            groups.append([obj])
    return groups


def object_count(ann: dict[str, Any]) -> int:
    """Objects of a VG record as the engine sees them: ``objects.json`` entries merged when they denote one
    object; without objects, its regions (each region a candidate object)."""
    listed = [o for o in ann.get("objects") or [] if not o.get("unlisted")]
    return len(_merge_objects(listed)) if listed else len(ann.get("regions", []))


def _vg_object_things(ann: dict[str, Any], width: int, height: int) -> tuple[list[Thing], dict[str, str]]:
    things, owner = [], {}
    for group in _merge_objects([o for o in ann["objects"] if not o.get("unlisted")]):
        first = group[0]
        parsed = next((p for o in group for n in o["names"] if (p := noun_phrase(n, clause_ok=False))), None)
        for obj in group:
            owner[obj["object_id"]] = f"o:{first['object_id']}"
        if parsed is None:
            continue
        name, noun, plural, number = parsed
        attributes = {a for o in group for a in o.get("attributes", [])}
        colours = {w for a in attributes for w in a.split() if w in COLOURS} | ({_pre_head_colour(name, noun)} - {None})
        materials = {MATERIALS[w] for a in attributes for w in a.split() if w in MATERIALS} | {
            MATERIALS[w] for w in name.split()[:-1] if w in MATERIALS
        }
        synset = next((s for o in group for s in o["synsets"]), None) or synset_of(noun)
        boxes = tuple(dict.fromkeys(tuple(max(0, v) for v in o["box"]) for o in group))
        synsets = {s for o in group for s in o["synsets"]}
        if body_part({noun}, synsets):
            continue
        category = kind_of(synsets, {noun})
        things.append(
            Thing(
                f"o:{first['object_id']}",
                name,
                noun,
                plural,
                boxes,
                synset,
                colours.pop() if len(colours) == 1 and not person({noun}, synsets) else None,
                materials.pop() if len(materials) == 1 else None,
                is_background(noun, name, boxes, width, height),
                None,
                category,
            )
        )
    return things, owner


def _vg_region_things(ann: dict[str, Any], width: int, height: int) -> list[Thing]:
    things = []
    for region in ann.get("regions", []):
        parsed = noun_phrase(region["phrase"])
        if parsed and not body_part({parsed[1]}):
            name, noun, plural, number = parsed
            category = kind_of(set(), {noun})
            box = tuple(max(0, v) for v in region["box"])
            things.append(
                Thing(
                    f"r:{region['region_id']}",
                    name,
                    noun,
                    plural,
                    (box,),
                    synset_of(noun),
                    None if person({noun}) else _pre_head_colour(name, noun),
                    None,
                    is_background(noun, name, (box,), width, height),
                    None,
                    category,
                )
            )
    return things


def build_scene(ann: dict[str, Any]) -> Scene:
    """Every nameable thing of one annotation record; a thing whose name (or, for VG, head noun) another
    thing shares is left out, since "the man" would not say which man, and so is a bare noun ("the tv")
    when another thing is of the same noun or sense ("the tv screens", "the television")."""
    boxes = [tuple(b) for e in ann.get("entities", []) for b in e["boxes"]] + [
        tuple(r["box"]) for r in ann.get("regions", [])
    ]
    boxes += [tuple(o["box"]) for o in ann.get("objects") or []]
    width, height = _image_size(ann, boxes)
    relations: list[tuple[str, str, str]] = []
    if ann["source"] == "flickr30k_entities":
        things = _flickr_things(ann, width, height)
        relations = _flickr_relations(ann)
        key = lambda t: t.name  # noqa: E731 - Flickr names are whole descriptions
    elif ann.get("objects"):
        things, owner = _vg_object_things(ann, width, height)
        for rel in ann.get("relationships", []):
            pred = predicate(rel["predicate"])
            if (
                pred
                and rel["subject_id"] in owner
                and rel["object_id"] in owner
                and owner[rel["subject_id"]] != owner[rel["object_id"]]
            ):
                relations.append((owner[rel["subject_id"]], pred, owner[rel["object_id"]]))
        key = lambda t: t.noun  # noqa: E731
    else:
        things = _vg_region_things(ann, width, height)
        key = lambda t: t.noun  # noqa: E731
    seen: dict[str, int] = {}
    for thing in things:
        seen[key(thing)] = seen.get(key(thing), 0) + 1
    kinds: dict[str, int] = {}
    for thing in things:
        for mark in {thing.noun, thing.synset} - {None}:
            kinds[mark] = kinds.get(mark, 0) + 1
    kept = {
        t.id: t
        for t in things
        if seen[key(t)] == 1 and (len(t.name.split()) > 1 or all(kinds[m] == 1 for m in {t.noun, t.synset} - {None}))
    }  # "the tv" beside "the tv screens"
    return Scene(kept, width, height, tuple(dict.fromkeys(r for r in relations if r[0] in kept and r[2] in kept)))


# ---- what may be compared -------------------------------------------------------------------------------


def entangled(a: Thing, b: Thing) -> bool:
    """One contains, largely overlaps or shares a box with the other (part/whole, member/group, one object twice)."""
    for p in a.boxes:
        for q in b.boxes:
            inter = area((max(p[0], q[0]), max(p[1], q[1]), min(p[2], q[2]), min(p[3], q[3])))
            if inter > OVERLAP * max(min(area(p), area(q)), 1):
                return True
    return False


def comparable(a: Thing, b: Thing) -> bool:
    return a.id != b.id and not a.background and not b.background and not entangled(a, b)


def holds(rel: str, a: Thing, b: Thing, scene: Scene) -> bool:
    """``rel(a, b)`` is clear: for a position, every box of a lies on that side of every box of b (centre by the
    margin, both edges no further the other way); for a size, both are one box and a is the larger by the ratio."""
    if not comparable(a, b):
        return False
    if rel in ("larger", "smaller"):
        if len(a.boxes) > 1 or len(b.boxes) > 1 or a.plural or b.plural:
            return False
        big, small = (a, b) if rel == "larger" else (b, a)
        return area(big.boxes[0]) >= SIZE_RATIO * max(area(small.boxes[0]), 1)
    axis, extent = (0, scene.width) if rel in ("left_of", "right_of") else (1, scene.height)
    first, second = (a, b) if rel in ("left_of", "above") else (b, a)
    return all(
        (p[axis] + p[axis + 2]) / 2 + MARGIN * extent <= (q[axis] + q[axis + 2]) / 2
        and p[axis] <= q[axis]
        and p[axis + 2] <= q[axis + 2]
        for p in first.boxes
        for q in second.boxes
    )
