"""The offline engine: every answer, Bool negative and distractor re-derived from the annotations by the test
itself (boxes and the knowledge table, not the engine's judge); English with number agreement; hops that go
through the previous answer; and a judge that rejects what is wrong."""

from __future__ import annotations

import json
import random
import re

import inflect
import pytest

from bench import corpora
from comvint import engine
from comvint.engine.scene import knowledge
from comvint.readers import flickr30k, visual_genome
from tests.conftest import DATA

FAMILY = {"flickr30k_entities": "cross_modal", "visual_genome": "outside_knowledge"}
CLAUSE = re.compile(r"^(not )?(\w+)\(([^)]*)\)(?:=(\d+))?$")
PLURAL_WORDS = {"dogs", "kids", "children", "bikes", "bicycles", "mugs", "books", "windows", "glasses", "men", "women", "girls",
                "boys", "puppies", "cats", "terriers", "friends", "plates", "lamps", "chairs", "tables", "cars", "trees", "forks"}


def sample_annotations() -> list[dict]:
    root, anns = DATA / "flickr30k_entities", []
    for sentences in sorted((root / "Sentences").glob("*.txt")):
        xml = (root / "Annotations" / f"{sentences.stem}.xml").read_bytes()
        try:
            anns.append(flickr30k.build_record(sentences.stem, sentences.read_bytes(), xml))
        except ValueError:
            continue  # the sample's deliberately broken image
    with open(DATA / "visual_genome" / "region_descriptions.json", "rb") as handle:
        return anns + list(visual_genome.read_images(handle, "sample"))


def plural_rich_annotations(n: int = 40) -> list[dict]:
    rng = random.Random(11)
    anns = []
    for k in range(n):
        text, xml = corpora.flickr_image(rng, 3_000_000 + k)
        anns.append(flickr30k.build_record(str(3_000_000 + k), text.encode(), xml.encode()))
    for k in range(n):
        regions = [{"region_id": str(10_000 * k + j), "phrase": corpora.vg_phrase(rng),
                    "box": [x := rng.randint(0, 500), y := rng.randint(0, 380), x + rng.randint(20, 140), y + rng.randint(20, 100)]}
                   for j in range(rng.randint(6, 14))]
        anns.append({"image_id": str(k), "source": "visual_genome", "width": 640, "height": 480, "image": "x.jpg",
                     "captions": [], "entities": [], "regions": regions})
    return anns


def chains(ann: dict) -> list[dict]:
    """Every record the engine makes for one image: rounds 0-2 and each one's closed formats."""
    records = []
    made = engine.answer("generate", {"ann": ann, "family": FAMILY[ann["source"]], "topic": None, "n": 3, "key": ann["image_id"]})
    for k, qa in enumerate(made["items"]):
        parent = {**qa, "format": "open_ended", "round": 0}
        records.append(parent)
        for round_no in (1, 2):
            hop = engine.answer("complicate", {"ann": ann, "item": parent, "key": f"{ann['image_id']}|{k}|{round_no}"})
            if not hop["instruction"]:
                break
            parent = {**hop, "format": "open_ended", "round": round_no, "parent": parent}
            records.append(parent)
        for record in [r for r in records if r["format"] == "open_ended" and "closed" not in r]:
            closed = engine.answer("reformulate", {"ann": ann, "item": record, "key": "k"})
            record["closed"] = True
            if closed["bool_positive"]:
                records.append({"format": "bool", "instruction": closed["bool_positive"], "answer": "yes", "grounding": closed["bool_positive_grounding"]})
                records.append({"format": "bool", "instruction": closed["bool_negative"], "answer": "no", "grounding": closed["bool_negative_grounding"]})
            if closed["mc_question"]:
                records.append({"format": "multiple_choice", "instruction": closed["mc_question"], "answer": closed["correct_option"],
                                "options": [closed["correct_option"], *closed["distractors"]], "grounding": closed["mc_grounding"]})
    return records


# ---- the test's own reading of the annotations -------------------------------------------------


def boxes_of(ann: dict) -> dict[str, list[list[int]]]:
    found = {f"e:{e['entity_id']}": e["boxes"] for e in ann["entities"]}
    return found | {f"r:{r['region_id']}": [r["box"]] for r in ann["regions"]}


def holds(rel: str, a: list[list[int]], b: list[list[int]], margin: float = 0.08) -> bool:
    """The relation from the union boxes, written independently of the engine."""
    ua = [min(x[0] for x in a), min(x[1] for x in a), max(x[2] for x in a), max(x[3] for x in a)]
    ub = [min(x[0] for x in b), min(x[1] for x in b), max(x[2] for x in b), max(x[3] for x in b)]
    extent = max(ua[2], ub[2], ua[3], ub[3])
    area_a, area_b = (ua[2] - ua[0]) * (ua[3] - ua[1]), (ub[2] - ub[0]) * (ub[3] - ub[1])
    centre = {"left_of": (ub[0] + ub[2] - ua[0] - ua[2]) / 2, "right_of": (ua[0] + ua[2] - ub[0] - ub[2]) / 2,
              "above": (ub[1] + ub[3] - ua[1] - ua[3]) / 2, "below": (ua[1] + ua[3] - ub[1] - ub[3]) / 2}
    if rel in centre:
        return centre[rel] / extent >= margin
    diff = (area_a - area_b) if rel == "larger" else (area_b - area_a)
    return diff / max(area_a, area_b) >= margin


def objects_named(text: str) -> list[str]:
    """Knowledge-table objects some text names, in order (plurals and aliases folded)."""
    table, found = knowledge(), []
    for word in re.findall(r"[a-z]+", text.lower()):
        for form in (word, inflect.engine().singular_noun(word) or word):
            name = table["aliases"].get(form, form)
            if name in table["objects"] and name not in found:
                found.append(name)
    return found


def named_objects(thing_id: str, ann: dict) -> list[str]:
    """The objects a thing's own words name, the first one (its head) first."""
    texts = [r["phrase"] for r in ann["regions"] if f"r:{r['region_id']}" == thing_id]
    texts += [p["text"] for c in ann["captions"] for p in c["phrases"] if f"e:{p['entity_id']}" == thing_id]
    return [o for text in texts for o in objects_named(text)]


def rederive(clause: str, ann: dict) -> bool:
    negated, rel, args, number = CLAUSE.match(clause).groups()
    args, boxes = args.split(","), boxes_of(ann)
    if rel == "count":
        return (len(boxes[args[0]]) == int(number)) != bool(negated)
    if rel == "attr":  # the colour words a thing's own description puts before its noun
        texts = [r["phrase"] for r in ann["regions"] if f"r:{r['region_id']}" == args[0]]
        texts += [p["text"] for c in ann["captions"] for p in c["phrases"] if f"e:{p['entity_id']}" == args[0]]
        own = {w for t in texts for w in re.split(r"\b(?:in|with|wearing|on|of|by|near|next|behind|holding|under)\b", t.lower())[0].split()}
        return (args[1] not in own) if negated else (args[1] in own)
    if rel == "fact":
        table = knowledge()["objects"]
        named = named_objects(args[0], ann)
        claimed = table[args[1]][args[2]]
        if negated:  # the thing's own value (its head object's) is another one
            return bool(named) and bool(claimed) and table[named[0]][args[2]] not in ("", claimed)
        return bool(claimed) and args[1] in named
    if negated:  # the claim is clearly false: the other way round holds
        flipped = {"left_of": "right_of", "right_of": "left_of", "above": "below", "below": "above", "larger": "smaller", "smaller": "larger"}
        return holds(flipped[rel], boxes[args[0]], boxes[args[1]])
    return holds(rel, boxes[args[0]], boxes[args[1]])


@pytest.mark.parametrize("corpus", ["sample", "plural_rich"])
def test_every_clause_and_answer_holds_against_the_annotations(corpus):
    anns = sample_annotations() if corpus == "sample" else plural_rich_annotations()
    made = 0
    for ann in anns:
        for record in chains(ann):
            made += 1
            assert all(rederive(c, ann) for c in record["grounding"]), (record["instruction"], record["grounding"])
            verdict = engine.answer("verify", {"ann": ann, "item": record})
            assert verdict["verdict"] == "yes", (record["instruction"], verdict["evidence"])
            negated = [c for c in record["grounding"] if c.startswith("not ")]
            if record["format"] == "bool":
                assert record["answer"] == ("no" if negated and negated[-1] == record["grounding"][-1] else "yes")
            if record["format"] == "multiple_choice":
                assert len(set(record["options"])) == 4 and len(record["grounding"]) >= 3  # a clause for each distractor (one may be a step)
    assert made > (30 if corpus == "sample" else 300)


def test_fact_distractors_are_values_of_other_things_in_the_same_image():
    for ann in sample_annotations():
        objects = {o for r in ann["regions"] for o in objects_named(r["phrase"])}
        for record in chains(ann):
            if record["format"] == "multiple_choice" and any(c.startswith("not fact(") for c in record["grounding"]):
                others = [CLAUSE.match(c).group(3).split(",")[1] for c in record["grounding"] if c.startswith("not fact(")]
                assert set(others) <= objects, others


def test_number_agreement_on_plural_rich_images():
    texts = [t for ann in plural_rich_annotations() + sample_annotations() for r in chains(ann) for t in (r["instruction"], r["answer"])]
    for text in texts:
        plain = re.sub(r"whichever of [^.?:]*? is ", "", text)  # "whichever of the dog and the bikes is ..." is singular
        for plural in PLURAL_WORDS:
            assert not re.search(rf"\b{plural} is\b|\bIs the (?:\w+ ){{0,3}}{plural} (?:further|higher|lower|larger|smaller)\b", plain), text
        assert not re.search(r"\b(?:a|an) (?:two|three|four)\b", text) and "  " not in text, text
        assert not re.search(r"\bthe the\b|\bthe a\b|\ba the\b", text, re.I), text
    assert any(re.search(r"\bare (?:further|higher|lower|larger|smaller)\b", t) for t in texts)  # plural verbs do occur


def test_a_complication_goes_through_the_previous_answer():
    for ann in plural_rich_annotations(20) + sample_annotations():
        for record in chains(ann):
            parent = record.get("parent")
            if parent is None:
                continue
            assert not record["instruction"].startswith(parent["instruction"].rstrip("?"))  # not the parent plus a question
            steps = [c for c in parent["grounding"] if not c.startswith(("fact(", "attr("))]  # without its final ask
            assert record["grounding"][: len(steps)] == steps  # the parent's steps, then the hop
            new = [c for c in record["grounding"] if c not in parent["grounding"]]
            focus = CLAUSE.match(steps[-1]).group(3).split(",")[0]
            assert new and any(focus in c for c in new), (parent["grounding"], record["grounding"])
            assert record["knowledge_type"] in ("visual", "physical", "commonsense", "knowledge-base")


def test_questions_do_not_name_the_thing_whose_fact_they_ask():
    for ann in sample_annotations() + plural_rich_annotations(20):
        for record in chains(ann):
            if record["format"] == "open_ended" and record["grounding"][-1].startswith("fact("):
                assert "whichever" in record["instruction"]  # reached through a comparison, never by its name alone


@pytest.mark.parametrize("mutate, why", [
    (lambda r: {**r, "answer": "The wrong thing. " + r["answer"]}, "not"),  # an answer the clauses do not give
    (lambda r: {**r, "grounding": [re.sub(r"^(\w+)\((.*?),(.*?)\)", r"\1(\3,\2)", r["grounding"][0]), *r["grounding"][1:]]}, "FAILS"),
    (lambda r: {**r, "grounding": [r["grounding"][-1]] if r["grounding"][-1].startswith("fact(") else ["fact(r:1,clock,used_for)"]}, ""),
    (lambda r: {**r, "grounding": ["e:99"]}, "cannot read"),
])
def test_the_judge_rejects_what_is_wrong(mutate, why):
    ann = sample_annotations()[0]
    record = chains(ann)[0]
    verdict = engine.answer("verify", {"ann": ann, "item": mutate(record)})
    assert verdict["verdict"] == "no" and why in verdict["evidence"]


def test_a_true_claim_is_no_valid_bool_no():
    ann = sample_annotations()[0]
    bools = [r for r in chains(ann) if r["format"] == "bool" and r["answer"] == "no"]
    flipped = {**bools[0], "grounding": [c.replace("not ", "") if c.startswith("not ") else c for c in bools[0]["grounding"]]}
    assert engine.answer("verify_reformulated", {"ann": ann, "item": flipped})["verdict"] == "no"


def test_an_image_with_nothing_to_ask_gets_no_question():
    lone = {"image_id": "9", "source": "flickr30k_entities", "width": 10, "height": 10, "image": "x.jpg", "regions": [],
            "captions": [{"text": "A cat", "phrases": [{"text": "A cat", "entity_id": "1", "types": [], "first_word_index": 0}]}],
            "entities": [{"entity_id": "1", "boxes": [[0, 0, 5, 5]], "scene": False, "no_box": False}]}
    assert engine.answer("generate", {"ann": lone, "family": "cross_modal", "topic": None, "n": 3, "key": "9"}) == {"items": []}


def test_questions_are_diverse_across_images():
    questions = [r["instruction"] for ann in plural_rich_annotations(40) for r in chains(ann) if r["format"] == "open_ended"]
    assert len(set(questions)) >= 0.95 * len(questions)  # (a multiple-choice record asks what its open question asks)
    assert json.dumps(chains(plural_rich_annotations(1)[0])) == json.dumps(chains(plural_rich_annotations(1)[0]))  # seeded
