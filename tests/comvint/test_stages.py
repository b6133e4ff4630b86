"""Each stage on its own: the messages it sends, and what it makes of every kind of reply."""

from __future__ import annotations

import asyncio
import json

import pytest

from comvint import prompts
from comvint.llm.client import Reply
from comvint.llm.config import LLMConfig
from comvint.llm.runner import StageRunner
from comvint.records import Failure
from comvint.stages.base import FAILED, OK, REJECTED, SKIPPED, handle_outcomes
from comvint.stages.method import Complicate, MethodConfig, Reformulate, Synthesize, Verify, eliminate

CFG = MethodConfig(backend="openai", model="m", per_image=2)
FLICKR = {
    "source": "flickr30k_entities",
    "image_id": "1",
    "image": "flickr30k-images/1.jpg",
    "width": 100,
    "height": 100,
    "regions": [],
    "captions": [
        {
            "text": "A man pets a dog .",
            "phrases": [
                {"text": "A man", "entity_id": "1", "types": ["people"], "first_word_index": 0},
                {"text": "a dog", "entity_id": "2", "types": ["animals"], "first_word_index": 3},
            ],
        }
    ],
    "entities": [
        {"entity_id": "1", "boxes": [[0, 0, 10, 10]], "scene": False, "no_box": False},
        {"entity_id": "2", "boxes": [[50, 50, 60, 60], [70, 70, 80, 80]], "scene": False, "no_box": False},
    ],
}
VG = {
    "source": "visual_genome",
    "image_id": "7",
    "image": "vg/7.jpg",
    "captions": [],
    "entities": [],
    "_topic": "car",
    "regions": [{"region_id": "5", "phrase": "a red car", "box": [1, 2, 11, 22]}],
}
ITEM = {
    "id": "abc",
    "image_id": "1",
    "source": "flickr30k_entities",
    "image": "flickr30k-images/1.jpg",
    "family": "cross_modal",
    "format": "open_ended",
    "instruction": "Where is the dog?",
    "answer": "Right of the man.",
    "round": 0,
    "parent_id": None,
    "knowledge_type": None,
    "knowledge_topic": None,
    "verification": None,
    "grounding": ["e:1", "e:2"],
    "llm": {"backend": "openai", "model": "m", "prompt_version": prompts.PROMPT_VERSION},
    "_unit": "flickr30k_entities/1",
}


class Scripted:
    """A backend that answers every request with one fixed reply."""

    name = "scripted"

    def __init__(self, text: str, finish_reason: str = "stop") -> None:
        self.reply = Reply(text, finish_reason)

    async def complete(self, call, model, max_tokens=None, seed=None) -> Reply:
        return self.reply

    async def close(self) -> None:
        return None


def ann_for(item: dict) -> dict:
    """The annotation record a stage is handed beside ``item``: the record itself for the first stage."""
    return item if "captions" in item else FLICKR


def run(stage, item, text: str, finish_reason: str = "stop"):
    """Everything ``item`` becomes in ``stage`` when the endpoint answers ``text``."""
    runner = StageRunner(LLMConfig(backend="openai", max_retries=0), Scripted(text, finish_reason))
    outcomes = asyncio.run(runner.run(stage.calls(item, ann_for(item))))
    return handle_outcomes(stage, item, ann_for(item), outcomes)


def test_synthesize_cross_modal_messages():
    (call,) = Synthesize(CFG).calls(FLICKR, FLICKR)
    roles = [m["role"] for m in call.messages]
    system, demo_user, demo_reply, user = (m["content"] for m in call.messages)
    assert (
        roles == ["system", "user", "assistant", "user"]
        and call.item_id == "flickr30k_entities/1"
        and call.schema_name == "synthesized"
    )
    assert "Write 2 complex question/answer pairs" in system and prompts.DATA_RULE in system
    assert "identical boxes name one and the same object" in system and "No trivial questions" in system
    assert len(json.loads(demo_reply)["items"]) == 2 and demo_user.startswith(
        "<annotations>\nImage size: 500 x 333 pixels"
    )
    assert user == (
        "<annotations>\nImage size: 100 x 100 pixels\nA man [0, 0, 10, 10] pets a dog [50, 50, 60, 60] [70, 70, 80, "
        "80] .\n\n"
        "Entity ids:\ne:1 = A man\ne:2 = a dog\n</annotations>"
    )


def test_synthesize_outside_knowledge_messages():
    (call,) = Synthesize(CFG).calls(VG, VG)
    system, user = call.messages[0]["content"], call.messages[-1]["content"]
    assert (
        "Highly overlapping boxes may be the same object" in system
        and "no simple questions about colour or position" in system
    )
    assert user.endswith('Topic entity: "car"')
    topics = user.split("Knowledge topics: ")[1].split("\n")[0].split("; ")
    assert len(topics) == 5 and set(topics) <= set(prompts.OKVQA_TOPICS)
    assert user.startswith("<annotations>\nr:5 a red car X: 1 Y: 2 Width: 10 Height: 20\n</annotations>")
    assert Synthesize(CFG).calls(VG, VG) == [call]  # topics sampled deterministically per image
    no_topic = {**VG, "_topic": None}
    untopical = Synthesize(CFG).calls(no_topic, no_topic)[0].messages[-1]["content"]
    assert "Topic entity" not in untopical  # no empty topic sentence


def test_later_stages_put_the_item_in_the_last_turn_and_keep_the_system_prompt_fixed():
    for stage in (Complicate(CFG), Verify(CFG), Reformulate(CFG)):
        (call,) = stage.calls(ITEM, FLICKR)
        (other,) = stage.calls({**ITEM, "id": "xyz", "instruction": "What pets the dog?"}, FLICKR)
        user = call.messages[-1]["content"]
        assert (
            "Instruction: Where is the dog?" in user and "Answer: Right of the man." in user and call.item_id == "abc"
        )
        assert user.startswith("<annotations>\nImage size: 100 x 100 pixels\nA man [0, 0, 10, 10]")
        assert call.messages[:3] == other.messages[:3]  # one cacheable prefix per stage and family
    ktype = Complicate(CFG).calls(ITEM, FLICKR)[0].messages[-1]["content"].split("Knowledge to add: ")[1].split("\n")[0]
    assert ktype in prompts.FAMILY_KNOWLEDGE_TYPES["cross_modal"] and ktype != "knowledge-base"


def test_the_judge_sees_the_instruction_a_complication_rewrites():
    child = {
        **ITEM,
        "round": 1,
        "instruction": "Where is the dog, and what is left of it?",
        "_parent_instruction": "Where is the dog?",
        "_parent_answer": "Right of the man.",
    }
    user = Verify(CFG).calls(child, FLICKR)[0].messages[-1]["content"]
    assert "Rewrites: Where is the dog?\nIts answer: Right of the man." in user
    assert "Rewrites:" not in Reformulate(CFG).calls(child, FLICKR)[0].messages[-1]["content"]


QA = {"instruction": "Is the man left of the dog?", "answer": "Yes.", "grounding": ["e:1"], "knowledge_topic": ""}
CLEAN = {
    "synthesize": (Synthesize(CFG), FLICKR, {"items": [QA, {**QA, "instruction": "What does the man touch?"}]}),
    "complicate": (
        Complicate(CFG),
        ITEM,
        {
            "instruction": "Which animal right of the man has two boxes?",
            "answer": "The dog.",
            "grounding": ["e:2"],
            "knowledge_type": "visual",
        },
    ),
    "verify": (Verify(CFG), ITEM, {"evidence": "e:2 is right of e:1", "verdict": "yes"}),
    "reformulate": (
        Reformulate(CFG),
        ITEM,
        {
            "bool_positive": "Is the dog right of the man?",
            "bool_negative": "Is the man right of the dog?",
            "mc_question": "Where is the dog?",
            "correct_option": "Right of the man",
            "distractors": ["Left of the man", "Above the man", "Under the man"],
            "bool_positive_grounding": ["e:2"],
            "bool_negative_grounding": ["e:1"],
            "mc_grounding": ["e:1", "e:2"],
        },
    ),
}
EXPECTED_OK = {"synthesize": 2, "complicate": 1, "verify": 1, "reformulate": 3}


@pytest.mark.parametrize("name", sorted(CLEAN))
@pytest.mark.parametrize(
    "wrap", [lambda s: s, lambda s: f"```json\n{s}\n```", lambda s: f"Sure! Here it is:\n{s}\nHope this helps."]
)
def test_clean_and_noisy_replies_parse(name, wrap):
    stage, item, reply = CLEAN[name]
    emitted = run(stage, item, wrap(json.dumps(reply)))
    assert [tag for tag, _ in emitted] == [OK] * EXPECTED_OK[name]


def _failure(emitted) -> Failure:
    ((tag, failure),) = emitted
    assert tag == FAILED and isinstance(failure, Failure)
    return failure


@pytest.mark.parametrize("name", sorted(CLEAN))
@pytest.mark.parametrize(
    "text, finish, cause",
    [
        ("", "stop", "invalid_json"),
        ("   ", "stop", "invalid_json"),
        ("I cannot help with that.", "stop", "invalid_json"),
        ('{"items": [{"instruction": "Is the', "length", "truncated"),
        ('{"evidence": "x", "ver', "stop", "invalid_json"),
        ('{"unexpected": 1}', "stop", "schema_violation"),
        ("{}", "content_filter", "content_filter"),
    ],
)
def test_bad_replies_fail_with_reason_and_raw_reply(name, text, finish, cause):
    stage, item, _ = CLEAN[name]
    failure = _failure(run(stage, item, text, finish))
    assert failure.reason == f"{stage.name}_exhausted_retries" and failure.detail.startswith(cause)
    assert failure.raw_response == text and failure.stage == stage.name
    assert (failure.image_id, failure.source) == (item["image_id"], item["source"])


@pytest.mark.parametrize(
    "name, reply",
    [
        ("synthesize", {"items": [{**QA, "grounding": "e:1"}]}),
        ("complicate", {**CLEAN["complicate"][2], "knowledge_type": "magic"}),
        ("complicate", {"instruction": "x", "answer": "y"}),
        ("verify", {"evidence": "x", "verdict": "maybe"}),
        ("reformulate", {**CLEAN["reformulate"][2], "distractors": ["a", "b"]}),
        ("synthesize", [QA]),
    ],
)
def test_schema_violations_are_failures(name, reply):
    stage, item, _ = CLEAN[name]
    assert _failure(run(stage, item, json.dumps(reply))).detail.startswith("schema_violation")


def test_verify_no_is_a_rejection_with_evidence():
    ((tag, record),) = run(Verify(CFG), ITEM, json.dumps({"evidence": "there is no dog", "verdict": "no"}))
    assert tag == REJECTED and record["reason"] == "verify_rejected" and record["evidence"] == "there is no dog"
    assert record["verification"] == {"passed": False, "evidence": "there is no dog"} and "_ann" not in record


def test_reformulate_repeated_options_is_a_parse_failure():
    reply = {**CLEAN["reformulate"][2], "distractors": ["Right of the man", "Left", "Up"]}
    failure = _failure(run(Reformulate(CFG), ITEM, json.dumps(reply)))
    assert failure.reason == "reformulate_repeated_options" and "Right of the man" in failure.raw_response


def test_reformulate_children_and_complicate_child_link_to_parent():
    children = [r for _, r in run(*CLEAN["reformulate"][:2], json.dumps(CLEAN["reformulate"][2]))]
    assert [(c["format"], c["answer"]) for c in children[:2]] == [("bool", "yes"), ("bool", "no")]
    mc = children[2]
    assert mc["options"][mc["answer_index"]] == mc["answer"] == "Right of the man"
    assert {c["parent_id"] for c in children} == {"abc"} and len({c["id"] for c in children}) == 3
    ((_, child),) = run(*CLEAN["complicate"][:2], json.dumps(CLEAN["complicate"][2]))
    assert child["round"] == 1 and child["parent_id"] == "abc" and child["knowledge_type"] in prompts.KNOWLEDGE_TYPES


@pytest.mark.parametrize(
    "instruction, reason",
    [
        ("Sorry, I cannot help with that.", "eliminate_refusal"),
        ("I'm sorry, but I can't rewrite this.", "eliminate_refusal"),
        ("I cannot answer from these annotations.", "eliminate_refusal"),
        ("As an AI, I can't see images.", "eliminate_refusal"),
        ("Why is the man unable to reach the top shelf?", None),
        ("Is the dog sorry for chewing the shoe on the left?", None),
    ],
)
def test_refusals_are_first_person_only(instruction, reason):
    item = {"instruction": instruction, "_parent_instruction": "What is the man holding?"}
    assert eliminate(item) == reason


def test_nothing_to_ask_rejects_the_image_and_nothing_harder_skips_the_item():
    ((tag, record),) = run(Synthesize(CFG), FLICKR, json.dumps({"items": []}))
    assert tag == REJECTED and (record["reason"], record["stage"], record["image_id"], record["round"]) == (
        "generate_nothing_to_ask",
        "generate",
        "1",
        None,
    )
    ((tag, record),) = run(
        Complicate(CFG),
        ITEM,
        json.dumps({"instruction": "", "answer": "", "grounding": [], "knowledge_type": "visual"}),
    )
    assert tag == SKIPPED and record == {
        "stage": "complicate",
        "reason": "complicate_not_applicable",
        "item_id": ITEM["id"],
    }


def test_complication_keeps_the_knowledge_type_the_reply_names():
    ((tag, child),) = run(Complicate(CFG), ITEM, json.dumps(CLEAN["complicate"][2]))
    assert tag == OK and child["knowledge_type"] == "visual" and child["round"] == ITEM["round"] + 1


def test_reformulated_children_carry_their_own_grounding_and_no_verdict():
    children = [r for _, r in run(Reformulate(CFG), ITEM, json.dumps(CLEAN["reformulate"][2]))]
    assert [c["grounding"] for c in children] == [["e:2"], ["e:1"], ["e:1", "e:2"]]
    assert all(c["verification"] is None and c["parent_id"] == ITEM["id"] for c in children)
