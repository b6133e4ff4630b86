"""Synthetic Flickr30k Entities and Visual Genome corpora in the real on-disk formats, for the scale benchmarks.

The vocabulary is no richer than the bundled sample's (``data/``): every noun, colour and
relation word below occurs there. What varies is how they combine: people with clothing and
colours, counted groups with one box each ("two dogs"), objects from the knowledge table, and
boxes laid out at random, so the corpus is plural-rich and spatially varied the way real
annotations are, but gives an engine no words the sample does not have.
"""

from __future__ import annotations

import json
import os
import random

PEOPLE = ("man", "woman", "girl", "boy", "child", "cook", "guitarist", "performer", "gentleman", "musician")
PLURAL_PEOPLE = {
    "man": "men",
    "woman": "women",
    "girl": "girls",
    "boy": "boys",
    "child": "children",
    "friend": "friends",
}
ANIMALS = {"dog": "dogs", "cat": "cats", "puppy": "puppies", "terrier": "terriers"}
THINGS = {
    "bicycle": "bicycles",
    "plate": "plates",
    "lamp": "lamps",
    "chair": "chairs",
    "door": "doors",
    "guitar": "guitars",
    "frisbee": "frisbees",
    "table": "tables",
    "book": "books",
    "candle": "candles",
    "car": "cars",
    "mug": "mugs",
    "window": "windows",
    "tree": "trees",
    "umbrella": "umbrellas",
    "surfboard": "surfboards",
    "laptop": "laptops",
    "clock": "clocks",
    "phone": "phones",
    "fork": "forks",
    "glass": "glasses",
    "plant": "plants",
    "pizza": "pizzas",
}
COLOURS = ("red", "blue", "yellow", "brown", "white", "gray", "green", "black")
CLOTHING = ("apron", "jacket", "shirt", "hat", "coat", "wetsuit", "dress")
AGES = ("young", "older", "little", "smiling", "tall")
MATERIALS = ("wooden", "painted", "large", "small", "open", "parked")
VERBS = ("hands", "watches", "stands near", "walks past", "plays with", "throws", "holds", "sits beside", "looks at")
SCENES = ("the park", "a small kitchen", "a busy sidewalk", "the street", "the beach", "a home kitchen", "the road")
COUNTS = {2: "two", 3: "three"}


def _article(words: str) -> str:
    return ("an " if words[0] in "aeiou" else "a ") + words


def _person(rng: random.Random) -> str:
    noun = rng.choice(PEOPLE)
    shape = rng.random()
    if shape < 0.4:
        return f"a {noun} in a {rng.choice(COLOURS)} {rng.choice(CLOTHING)}"
    if shape < 0.6:
        return f"a {noun} wearing a {rng.choice(COLOURS)} {rng.choice(CLOTHING)}"
    if shape < 0.8:
        return _article(f"{rng.choice(AGES)} {noun}")
    return _article(noun)


def _described(rng: random.Random, table: dict[str, str]) -> tuple[str, str]:
    """(adjective or "", noun) of an animal or thing."""
    return (rng.choice(COLOURS + MATERIALS) if rng.random() < 0.7 else ""), rng.choice(sorted(table))


def _thing(rng: random.Random, table: dict[str, str]) -> str:
    adjective, noun = _described(rng, table)
    return _article(f"{adjective} {noun}".strip())


def _group(rng: random.Random, n: int, table: dict[str, str]) -> str:
    adjective, noun = _described(rng, table)
    return " ".join(w for w in (COUNTS[n], adjective, table[noun]) if w)


def _box(rng: random.Random, width: int, height: int) -> tuple[int, int, int, int]:
    w, h = rng.randint(width // 10, width // 2), rng.randint(height // 10, height // 2)
    x, y = rng.randint(1, width - w), rng.randint(1, height - h)
    return x, y, x + w - 1, y + h - 1


def box_object(names: str, box: tuple[int, int, int, int]) -> str:
    """One ``<object>`` of an Annotations XML: its ``<name>`` lines and a 1-based inclusive box."""
    x1, y1, x2, y2 = box
    return (
        f"\t<object>\n{names}\t\t<bndbox>\n\t\t\t<xmin>{x1}</xmin>\n\t\t\t<ymin>{y1}</ymin>\n"
        f"\t\t\t<xmax>{x2}</xmax>\n\t\t\t<ymax>{y2}</ymax>\n\t\t</bndbox>\n\t</object>\n"
    )


def annotation_xml(image_id: int, width: int, height: int, objects: list[str]) -> str:
    return (
        f"<annotation>\n\t<filename>{image_id}.jpg</filename>\n\t<size>\n\t\t<width>{width}</width>\n"
        f"\t\t<height>{height}</height>\n\t\t<depth>3</depth>\n\t</size>\n{''.join(objects)}</annotation>\n"
    )


def write_flickr_tree(root: str, images) -> None:
    """``(image_id, sentences text, annotations XML)`` triples -> a Flickr30k Entities tree under ``root``."""
    for kind in ("Sentences", "Annotations"):
        os.makedirs(os.path.join(root, kind), exist_ok=True)
    for image_id, text, xml in images:
        with open(os.path.join(root, "Sentences", f"{image_id}.txt"), "w", encoding="utf-8") as handle:
            handle.write(text)
        with open(os.path.join(root, "Annotations", f"{image_id}.xml"), "w", encoding="utf-8") as handle:
            handle.write(xml)


def flickr_image(rng: random.Random, image_id: int) -> tuple[str, str]:
    """(Sentences text, Annotations XML) of one image: people, animals, things, groups and a scene."""
    width, height = rng.choice((500, 375, 333)), rng.choice((500, 375, 333))
    entities: list[tuple[int, str, str, int]] = []  # (id, phrase, type, boxes)
    base = image_id * 10
    for k in range(rng.randint(1, 2)):
        entities.append((base + k, _person(rng), "people", 1))
    group = rng.random()
    n = rng.choice((2, 3))
    if group < 0.35:
        entities.append((base + 3, _group(rng, n, ANIMALS), "animals", n))
    elif group < 0.7:
        entities.append((base + 3, _group(rng, n, THINGS), "other", n))
    else:
        entities.append((base + 3, f"{COUNTS[n]} {PLURAL_PEOPLE[rng.choice(sorted(PLURAL_PEOPLE))]}", "people", n))
    for k in range(rng.randint(1, 3)):
        table = ANIMALS if rng.random() < 0.3 else THINGS
        entities.append((base + 4 + k, _thing(rng, table), "animals" if table is ANIMALS else "other", 1))
    entities.append((base + 9, rng.choice(SCENES), "scene", 0))
    lines = []
    for _ in range(5):
        a, b, c = rng.sample(entities[:-1], 3) if len(entities) > 3 else (entities[0], entities[1], entities[0])
        scene = entities[-1]
        lines.append(
            f"[/EN#{a[0]}/{a[2]} {a[1].capitalize()}] {rng.choice(VERBS)} [/EN#{b[0]}/{b[2]} {b[1]}] while "
            f"[/EN#{c[0]}/{c[2]} {c[1]}] {rng.choice(VERBS)} in [/EN#{scene[0]}/scene {scene[1]}] ."
        )
    objects = []
    for entity_id, _, kind, boxes in entities:
        if kind == "scene":
            objects.append(f"\t<object>\n\t\t<name>{entity_id}</name>\n\t\t<scene>1</scene>\n\t</object>\n")
            continue
        objects += [box_object(f"\t\t<name>{entity_id}</name>\n", _box(rng, width, height)) for _ in range(boxes)]
    return "\n".join(lines) + "\n", annotation_xml(image_id, width, height, objects)


def generate_flickr(root: str, n: int, seed: int = 3) -> None:
    rng = random.Random(seed)
    write_flickr_tree(root, ((2_000_000 + k, *flickr_image(rng, 2_000_000 + k)) for k in range(n)))


def vg_phrase(rng: random.Random) -> str:
    """A region phrase as VG writes them: no leading article ("red wooden door", "man wearing a brown coat")."""
    shape = rng.random()
    if shape < 0.35:
        return _thing(rng, THINGS).split(" ", 1)[1]
    if shape < 0.5:
        thing = _thing(rng, THINGS).split(" ", 1)[1]  # drawn first: the corpora stay what they were
        return f"{thing} on the {rng.choice(('table', 'street', 'desk', 'sidewalk', 'beach'))}"
    if shape < 0.7:
        return _person(rng).split(" ", 1)[1]
    if shape < 0.85:
        return _thing(rng, ANIMALS).split(" ", 1)[1]
    return _group(rng, rng.choice((2, 3)), THINGS)


def write_vg(path: str, n: int, region) -> None:
    """A one-line v1.2 ``region_descriptions.json`` of ``n`` images, written image by image;
    ``region(image_id, region_id)`` returns one region row, or None when the image has no more."""
    region_id = 1
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("[")
        for image_id in range(1, n + 1):
            rows = []
            while (row := region(image_id, region_id, len(rows))) is not None:
                rows.append(row)
                region_id += 1
            handle.write(("" if image_id == 1 else ", ") + json.dumps({"regions": rows, "id": image_id}))
        handle.write("]")


def generate_vg(path: str, n: int, regions: tuple[int, int] = (25, 75), seed: int = 5) -> None:
    """Visual Genome images of ``regions`` regions each, phrased like the sample's."""
    rng, counts = random.Random(seed), {}

    def region(image_id: int, region_id: int, made: int):
        if image_id not in counts:
            counts[image_id] = rng.randint(*regions)
        if made >= counts[image_id]:
            return None
        x, y = rng.randint(0, 560), rng.randint(0, 400)
        return {
            "region_id": region_id,
            "width": rng.randint(20, 640 - x),
            "height": rng.randint(20, 480 - y),
            "image_id": image_id,
            "phrase": vg_phrase(rng),
            "y": y,
            "x": x,
        }

    write_vg(path, n, region)
