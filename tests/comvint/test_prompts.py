"""The prompts: each stage's demonstration passes its own schema and handler, the annotation text is what the
renderer makes of the real files, region lines merge and cap by their rule, the topic entity, and golden
snapshots of every stage's rendered request (a wording change must bump PROMPT_VERSION)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import pathlib
import re

import pytest

from comvint import prompts, topics
from comvint.llm.client import Reply
from comvint.llm.config import LLMConfig
from comvint.llm.runner import StageRunner
from comvint.prompts import demonstrations
from comvint.prompts.render import head_word, merge_regions, most_informative, render
from comvint.readers import flickr30k
from comvint.readers import visual_genome as vg
from comvint.stages.base import FAILED, OK, SKIPPED, handle_outcomes
from comvint.stages.method import Complicate, MethodConfig, Reformulate, Synthesize, Verify, VerifyReformulated

REPO = pathlib.Path(__file__).resolve().parents[2]
REAL = REPO.parent / "shared" / "real_samples"
GOLDEN = REPO / "tests" / "golden" / "prompts.json"
FAMILIES = (prompts.CROSS_MODAL, prompts.OUTSIDE_KNOWLEDGE)
SOURCE = {prompts.CROSS_MODAL: "flickr30k_entities", prompts.OUTSIDE_KNOWLEDGE: "visual_genome"}
CFG = MethodConfig(backend="openai", model="m")


class Scripted:
    name = "scripted"

    def __init__(self, text: str) -> None:
        self.reply = Reply(text, "stop")

    async def complete(self, call, model, max_tokens=None, seed=None) -> Reply:
        return self.reply

    async def close(self) -> None:
        return None


def handled(stage, subject, ann: dict, reply: dict) -> list:
    runner = StageRunner(LLMConfig(backend="openai", max_retries=0), Scripted(json.dumps(reply)))
    return handle_outcomes(stage, subject, ann, asyncio.run(runner.run(stage.calls(subject, ann))))


def stub_ann(family: str) -> dict:
    return {"source": SOURCE[family], "image_id": "1", "image": "x.jpg", "captions": [], "entities": [], "regions": []}


def stub_item(family: str, **extra) -> dict:
    ann = stub_ann(family)
    return {
        "id": "i1",
        "image_id": "1",
        "source": ann["source"],
        "image": "x.jpg",
        "family": family,
        "format": "open_ended",
        "instruction": "q",
        "answer": "a",
        "round": 0,
        "parent_id": None,
        "knowledge_type": None,
        "knowledge_topic": None,
        "verification": None,
        "grounding": [],
        "llm": {},
        "_unit": "u",
        **extra,
    }


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("stage", ["generate", "complicate", "verify", "verify_reformulated", "reformulate"])
def test_each_demonstration_passes_its_stages_schema_and_handler(stage, family):
    user, reply = demonstrations.demonstration(stage, family)
    ids = set(re.findall(r"\b[er]:\d+", user))
    cited = {g for key, value in reply.items() if "grounding" in key for g in value}
    cited |= {g for qa in reply.get("items", []) for g in qa["grounding"]}
    assert cited <= ids  # every id a reply cites is one its annotations show
    item = stub_item(family)
    ann = stub_ann(family)
    subject = ann if stage == "generate" else item
    runner = {
        "generate": Synthesize,
        "complicate": Complicate,
        "verify": Verify,
        "verify_reformulated": VerifyReformulated,
        "reformulate": Reformulate,
    }[stage](CFG)
    out = handled(runner, subject, ann, reply)
    assert (
        [tag for tag, _ in out if tag in (FAILED, SKIPPED)] == []
        and any(tag == OK for tag, _ in out)
        or reply.get("verdict") == "no"
    )
    if stage == "generate":
        assert len({qa["instruction"] for qa in reply["items"]}) == 3 and all(
            len(qa["answer"].split()) < 30 for qa in reply["items"]
        )
    if stage == "complicate":
        item_in = demonstrations.COMPLICATE_CASES[family][0]["instruction"]
        assert (
            0 < len(reply["instruction"].split()) - len(item_in.split()) <= 20
            and reply["knowledge_type"] in prompts.FAMILY_KNOWLEDGE_TYPES[family]
        )


def test_one_demonstration_says_no():
    """A judge shown only "yes" learns to say yes."""
    verdicts = {
        demonstrations.demonstration(s, f)[1]["verdict"] for s in ("verify", "verify_reformulated") for f in FAMILIES
    }
    assert verdicts == {"yes", "no"}


def _real_flickr(image_id: str) -> dict | None:
    import tarfile

    tar_path = REAL / "flickr30k_entities_trainval" / "flickr30k_entities_trainval.tar.xz"
    if not tar_path.exists():
        return None
    with tarfile.open(tar_path) as tar:
        files = {}
        for member in tar:
            if member.name.endswith((f"Sentences/{image_id}.txt", f"Annotations/{image_id}.xml")):
                files[member.name.rsplit("/", 2)[1]] = tar.extractfile(member).read()
                if len(files) == 2:
                    break
    return flickr30k.build_record(image_id, files["Sentences"], files["Annotations"])


def _vg_records(root: pathlib.Path) -> dict[str, dict]:
    info = vg.parse_image_data((root / "image_data.json").read_text())
    with open(root / "region_descriptions.json", "rb") as handle:
        return {r["image_id"]: r for r in vg.read_images(handle, "regions", image_data=info) if isinstance(r, dict)}


@pytest.mark.skipif(not (REAL / "visual_genome_1_50").is_dir(), reason="real samples absent")
def test_demonstration_annotations_are_the_renderers_text_of_the_real_files():
    assert render(_vg_records(REAL / "visual_genome_1_50")["15"], 15) == demonstrations.VG_ANNOTATIONS
    record = _real_flickr("128396150")
    assert record is not None and render(record) == demonstrations.FLICKR_ANNOTATIONS


def region(rid: int, phrase: str, box: list[int]) -> dict:
    return {"region_id": str(rid), "phrase": phrase, "box": box}


def test_regions_of_one_object_merge_and_others_do_not():
    regions = [
        region(1, "man wearing grey shirt", [10, 10, 60, 110]),
        region(2, "the man in a grey shirt", [12, 8, 62, 112]),
        region(3, "grey shirt on a man", [12, 30, 60, 80]),  # another head: the shirt
        region(4, "a man", [300, 10, 350, 110]),  # the same head far away: another man
        region(5, "an empty bulletin board hanging up", [136, 140, 256, 292]),
        region(6, "a brown picture frame against the wall", [137, 141, 255, 290]),
    ]  # one box, two heads: not merged
    groups = merge_regions(regions)
    assert [[r["region_id"] for r in g] for g in groups] == [["1", "2"], ["3"], ["4"], ["5"], ["6"]]
    assert (
        head_word("Two computer towers sitting on the floor") == "tower"
        and head_word("the room appears to be well lit") == "room"
    )
    text = render({"source": "visual_genome", "width": 400, "height": 300, "regions": regions})
    assert text.splitlines()[:2] == [
        "Image size: 400 x 300 pixels",
        "r:1 man wearing grey shirt X: 10 Y: 10 Width: 50 Height: 100",
    ]  # the other says nothing more
    regions[1]["phrase"] = "the old man in a grey shirt"
    assert render({"source": "visual_genome", "regions": regions}).splitlines()[0] == (
        "r:1 man wearing grey shirt / the old man in a grey shirt X: 10 Y: 10 Width: 50 Height: 100"
    )


def test_the_cap_keeps_the_most_informative_lines_in_their_order():
    regions = [
        region(1, "a man", [0, 0, 10, 10]),
        region(2, "a tall man in a red coat", [0, 0, 5, 5]),
        region(3, "a red coat", [50, 50, 60, 60]),
        region(4, "a dog", [100, 100, 400, 400]),
    ]
    groups = merge_regions(regions)
    assert most_informative(groups, 2) == [1, 3]  # five new words, then a dog (a man and a red coat add nothing new)
    assert len(render({"source": "visual_genome", "regions": regions * 30}, 40).splitlines()) <= 40


def test_the_topic_is_the_rarest_object_of_the_corpus():
    ann = {
        "objects": [
            {"names": ["keyboard"], "synsets": ["keyboard.n.01"]},
            {"names": ["desk"], "synsets": ["desk.n.01"]},
            {"names": ["curpet"], "synsets": []},
        ]
    }
    terms = topics.object_terms(ann)
    assert terms == {"keyboard.n.01": "keyboard", "desk.n.01": "desk", "curpet": "curpet"}
    assert (
        topics.rarest(terms, {"keyboard.n.01": 3, "desk.n.01": 9, "curpet": 1}) == "keyboard"
    )  # a synset over a misspelling
    regions_only = {"regions": [region(1, "a red kite flying", [0, 0, 1, 1]), region(2, "the sky", [0, 0, 9, 9])]}
    assert topics.rarest(topics.object_terms(regions_only), {"kite": 2, "sky": 40}) == "kite"
    assert topics.rarest(topics.object_terms({"regions": []}), {}) is None


def golden_requests() -> dict[str, list[dict]]:
    """Every stage's request for one bundled Flickr image and one bundled Visual Genome image (ours)."""
    root = REPO / "data"
    flickr = flickr30k.build_record(
        "900004",
        (root / "flickr30k_entities/Sentences/900004.txt").read_bytes(),
        (root / "flickr30k_entities/Annotations/900004.xml").read_bytes(),
    )
    visual = {**_vg_records(root / "visual_genome")["1"], "_topic": "kite"}
    out = {}
    for family, ann in ((prompts.CROSS_MODAL, flickr), (prompts.OUTSIDE_KNOWLEDGE, visual)):
        out[f"generate/{family}"] = Synthesize(CFG).calls(ann, ann)[0].messages
        item = stub_item(family, instruction="What is the woman holding?", answer="A red umbrella.")
        child = {
            **item,
            "round": 1,
            "_parent_instruction": "What is the woman holding?",
            "_parent_answer": "An umbrella.",
        }
        closed = {**item, "format": "multiple_choice", "options": ["A red umbrella", "A kite", "A bag", "A dog"]}
        for name, stage, subject in (
            ("complicate", Complicate, item),
            ("verify", Verify, child),
            ("verify_reformulated", VerifyReformulated, closed),
            ("reformulate", Reformulate, item),
        ):
            out[f"{name}/{family}"] = stage(CFG).calls(subject, ann)[0].messages
    return out


def test_golden_requests():
    """Reviewed snapshots of every stage's request; COMVINT_UPDATE_GOLDEN=1 rewrites them (after a PROMPT_VERSION
    bump)."""
    requests = golden_requests()
    digest = hashlib.sha256(json.dumps(requests, sort_keys=True).encode()).hexdigest()
    if os.environ.get("COMVINT_UPDATE_GOLDEN"):
        GOLDEN.write_text(
            json.dumps(
                {"prompt_version": prompts.PROMPT_VERSION, "sha256": digest, "requests": requests},
                indent=1,
                ensure_ascii=False,
            )
            + "\n"
        )
    golden = json.loads(GOLDEN.read_text())
    if golden["requests"] != requests:
        assert golden["prompt_version"] != prompts.PROMPT_VERSION, (
            "a prompt's wording changed: bump PROMPT_VERSION, then regenerate"
        )
        pytest.fail("prompts changed and PROMPT_VERSION was bumped: review and regenerate with COMVINT_UPDATE_GOLDEN=1")
    assert golden["sha256"] == digest
