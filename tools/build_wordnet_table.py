"""Build ``comvint/knowledge/wordnet.json.gz``: the offline engine's facts, derived from WordNet 3.0.

Reads the Princeton WordNet 3.0 database files (Debian: ``apt-get install wordnet-base``, which puts
``index.noun`` and ``data.noun`` in ``/usr/share/wordnet``) with a parser of its own (the format is
WordNet's ``wndb(5)``), and keeps, for every physical noun sense a head noun or a Visual Genome synset
can name: its category (the nearest of a fixed list of everyday categories among its hypernyms), its
lexicographer file, its own part meronyms, its substance meronyms (own and its direct hypernyms'),
and the names of its direct hypernyms; for every single-word lemma, its first physical sense and the
category the bare noun names (:func:`lemma_category`: none when its senses disagree). Run: ``python
tools/build_wordnet_table.py [/usr/share/wordnet]``.
"""

from __future__ import annotations

import gzip
import json
import pathlib
import sys

OUT = pathlib.Path(__file__).resolve().parents[1] / "comvint" / "knowledge" / "wordnet.json.gz"
LEXFILES = [
    "adj.all",
    "adj.pert",
    "adv.all",
    "noun.Tops",
    "noun.act",
    "noun.animal",
    "noun.artifact",
    "noun.attribute",
    "noun.body",
    "noun.cognition",
    "noun.communication",
    "noun.event",
    "noun.feeling",
    "noun.food",
    "noun.group",
    "noun.location",
    "noun.motive",
    "noun.object",
    "noun.person",
    "noun.phenomenon",
    "noun.plant",
    "noun.possession",
    "noun.process",
    "noun.quantity",
    "noun.relation",
    "noun.shape",
    "noun.state",
    "noun.substance",
    "noun.time",
]
# Everyday categories a "what kind of thing" question may answer with: (synset, label). The nearest
# one among a sense's hypernyms is its category; earlier entries win at equal distance.
CATEGORIES = [
    ("person.n.01", "a person"),
    ("bird.n.01", "a bird"),
    ("fish.n.01", "a fish"),
    ("insect.n.01", "an insect"),
    ("mammal.n.01", "a mammal"),
    ("reptile.n.01", "a reptile"),
    ("animal.n.01", "an animal"),
    ("tree.n.01", "a tree"),
    ("flower.n.01", "a flower"),
    ("plant.n.02", "a plant"),
    ("edible_fruit.n.01", "a fruit"),
    ("vegetable.n.01", "a vegetable"),
    ("baked_goods.n.01", "a baked food"),
    ("dish.n.02", "a dish of food"),
    ("beverage.n.01", "a drink"),
    ("food.n.01", "food"),
    ("food.n.02", "food"),
    ("motor_vehicle.n.01", "a motor vehicle"),
    ("aircraft.n.01", "an aircraft"),
    ("vessel.n.02", "a boat or ship"),
    ("train.n.01", "a train"),
    ("public_transport.n.01", "public transport"),
    ("vehicle.n.01", "a vehicle"),
    ("footwear.n.01", "footwear"),
    ("footwear.n.02", "footwear"),
    ("headdress.n.01", "headwear"),
    ("garment.n.01", "a garment"),
    ("clothing.n.01", "clothing"),
    ("jewelry.n.01", "jewelry"),
    ("seat.n.03", "a seat"),
    ("table.n.02", "a table"),
    ("furniture.n.01", "furniture"),
    ("musical_instrument.n.01", "a musical instrument"),
    ("sports_equipment.n.01", "sports equipment"),
    ("plaything.n.01", "a toy"),
    ("tableware.n.01", "tableware"),
    ("kitchen_utensil.n.01", "a kitchen utensil"),
    ("bag.n.01", "a bag"),
    ("container.n.01", "a container"),
    ("electronic_equipment.n.01", "electronic equipment"),
    ("computer.n.01", "a computer"),
    ("lamp.n.01", "a lamp"),
    ("source_of_illumination.n.01", "a light source"),
    ("timepiece.n.01", "a timepiece"),
    ("tool.n.01", "a tool"),
    ("weapon.n.01", "a weapon"),
    ("signboard.n.01", "a sign"),
    ("building.n.01", "a building"),
    ("bridge.n.01", "a bridge"),
    ("road.n.01", "a road"),
    ("fabric.n.01", "a fabric"),
    ("paper.n.01", "paper"),
    ("body_part.n.01", "a body part"),
    ("covering.n.02", "a covering"),
    ("device.n.01", "a device"),
    ("structure.n.01", "a structure"),
    ("body_of_water.n.01", "a body of water"),
    ("geological_formation.n.01", "a natural landform"),
]
PHYSICAL = "physical_entity.n.01"
MAX_SENSES = 5  # senses looked at per lemma: its first physical one names it (a sign is a signboard)


def parse(root: pathlib.Path) -> tuple[dict[str, list[str]], dict[str, dict]]:
    """(lemma -> synset offsets in sense order, offset -> synset) of WordNet's nouns."""
    index: dict[str, list[str]] = {}
    for line in (root / "index.noun").read_text(encoding="latin-1").splitlines():
        if line.startswith(" "):
            continue
        parts = line.split()
        n, p = int(parts[2]), int(parts[3])
        index[parts[0]] = parts[4 + p + 2 : 4 + p + 2 + n]
    synsets: dict[str, dict] = {}
    for line in (root / "data.noun").read_text(encoding="latin-1").splitlines():
        if line.startswith(" "):
            continue
        f = line.partition("|")[0].split()
        words = int(f[3], 16)
        lemmas = [f[4 + 2 * k].lower() for k in range(words)]
        k = 4 + 2 * words
        pointers = []
        for _ in range(int(f[k])):
            pointers.append((f[k + 1], f[k + 2], f[k + 3]))
            k += 4
        synsets[f[0]] = {
            "lemmas": lemmas,
            "lex": LEXFILES[int(f[1])],
            "ptr": [(s, o) for s, o, pos in pointers if pos == "n"],
        }
    return index, synsets


def tag_counts(root: pathlib.Path) -> dict[tuple[str, str], int]:
    """(lemma, noun synset offset) -> how often that sense was tagged in WordNet's semantic concordance."""
    counts = {}
    for line in (root / "index.sense").read_text(encoding="latin-1").splitlines():
        key, offset, _, count = line.split()
        lemma, _, kind = key.partition("%")
        if kind.startswith("1:"):
            counts[(lemma, offset)] = int(count)
    return counts


def lemma_category(senses: list[tuple[int, int]]) -> int:
    """The category a bare noun names, from its physical senses in order as (tag count, category): the first
    sense's, when it dominates (tagged at least 4 times as often as the senses of other categories together,
    or, untagged, when no sense disagrees); -1 when the noun is ambiguous ("plant": a factory or a flora)."""
    (count, category), others = senses[0], [c for c, cat in senses[1:] if cat != senses[0][1]]
    if category < 0 or (count == 0 and others) or 4 * sum(others) > count > 0:
        return -1
    return category


def build(root: pathlib.Path) -> dict:
    index, synsets = parse(root)
    name = {}
    for lemma, offsets in index.items():
        for k, off in enumerate(offsets):
            if synsets[off]["lemmas"][0] == lemma:
                name[off] = f"{lemma}.n.{k + 1:02d}"
    by_name = {v: k for k, v in name.items()}

    def up(off: str) -> list[str]:
        return [o for s, o in synsets[off]["ptr"] if s in ("@", "@i")]

    def ancestors(off: str) -> dict[str, int]:
        seen, frontier, depth = {off: 0}, [off], 0
        while frontier:
            depth += 1
            frontier = [h for o in frontier for h in up(o) if h not in seen]
            for h in frontier:
                seen.setdefault(h, depth)
        return seen

    categories = {by_name[s]: k for k, (s, _) in enumerate(CATEGORIES)}
    physical = by_name[PHYSICAL]

    def words(offs: list[str]) -> list[str]:
        return sorted({synsets[o]["lemmas"][0].replace("_", " ") for o in offs})

    counts = tag_counts(root)
    table, lemmas = {}, {}
    for lemma, offsets in index.items():
        if not lemma.isascii() or lemma[0].isdigit():
            continue
        senses = []  # (tag count, category) of the lemma's physical senses
        artifact = 0  # whether one of them is a made thing ("mouse": also a device; "calculator": also a machine)
        for off in offsets[:MAX_SENSES]:
            anc = ancestors(off)
            if physical not in anc:
                continue
            artifact |= synsets[off]["lex"] == "noun.artifact"
            cat = min(((d, categories[a]) for a, d in anc.items() if a in categories), default=None)
            senses.append((counts.get((lemma, off), 0), cat[1] if cat else -1))
            if len(senses) == 1 and "_" not in lemma and "-" not in lemma:
                lemmas[lemma] = [name[off]]
            key = name[off]
            if key in table:
                continue
            near = [o for o, d in anc.items() if d <= 1]
            parts = words([o for s, o in synsets[off]["ptr"] if s == "%p"])
            stuff = words([o for a in near for s, o in synsets[a]["ptr"] if s == "%s"])
            table[key] = [
                cat[1] if cat else -1,
                LEXFILES.index(synsets[off]["lex"]),
                parts[:6],
                stuff[:4],
                [synsets[h]["lemmas"][0].replace("_", " ") for h in up(off)][:2],
            ]
        if lemma in lemmas and len(lemmas[lemma]) == 1:
            lemmas[lemma] += [lemma_category(senses), artifact]
    labels = [label for _, label in CATEGORIES]
    ancestry = [
        sorted(
            {labels.index(CATEGORIES[categories[a]][1]) for a in ancestors(by_name[s]) if a in categories}
            - {labels.index(label)}
        )
        for s, label in CATEGORIES
    ]
    return {
        "source": "Princeton WordNet 3.0 (see comvint/knowledge/WORDNET_LICENSE)",
        "lexfiles": LEXFILES,
        "category_ancestors": ancestry,
        "fields": ["category", "lexfile", "parts", "substances", "hypernyms"],
        "categories": [label for _, label in CATEGORIES],
        "lemma_fields": [
            "synset of the first physical sense",
            "category the bare noun names (-1: ambiguous)",
            "1 if one of its first physical senses is an artifact",
        ],
        "lemmas": lemmas,
        "synsets": table,
    }


def main() -> None:
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "/usr/share/wordnet")
    data = build(root)
    OUT.write_bytes(gzip.compress(json.dumps(data, sort_keys=True, separators=(",", ":")).encode(), mtime=0))
    print(f"{len(data['lemmas'])} lemmas, {len(data['synsets'])} synsets -> {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
