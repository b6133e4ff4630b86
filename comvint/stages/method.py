"""The four stages of the method: synthesize, complicate, verify, reformulate.

Items flowing between stages are :class:`~comvint.item.Instruction` records; each stage is handed an item
and, beside it, its image's annotation record (Synthesize's item is that record). A stage never asks which
backend runs it: each call carries its messages for an endpoint and a structured ``context`` (the
annotation record and what the call is about) from which the offline engine answers.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Iterable
from typing import Any

from comvint import prompts
from comvint.dedup import canonical_image
from comvint.engine.scene import object_count
from comvint.item import Annotation, Instruction, public, stable_id
from comvint.llm.redact import redact
from comvint.llm.runner import Call
from comvint.prompts.render import MAX_REGIONS, render
from comvint.records import stable_int
from comvint.stages.base import OK, REJECTED, SKIPPED, Emit, ParseError

STR = {"type": "string"}
GROUNDING = {"type": "array", "items": STR}
QA = {
    "type": "object",
    "properties": {"instruction": STR, "answer": STR, "grounding": GROUNDING, "knowledge_topic": STR},
    "required": ["instruction", "answer", "grounding", "knowledge_topic"],
    "additionalProperties": False,
}
GENERATE_SCHEMA = {
    "type": "object",
    "properties": {"items": {"type": "array", "items": QA, "minItems": 0, "maxItems": 5}},
    "required": ["items"],
    "additionalProperties": False,
}
KNOWLEDGE_TYPE = {"type": "string", "enum": list(prompts.KNOWLEDGE_TYPES)}
COMPLICATE_SCHEMA = {
    "type": "object",
    "properties": {"instruction": STR, "answer": STR, "grounding": GROUNDING, "knowledge_type": KNOWLEDGE_TYPE},
    "required": ["instruction", "answer", "grounding", "knowledge_type"],
    "additionalProperties": False,
}
VERIFY_SCHEMA = {
    "type": "object",
    "properties": {"evidence": STR, "verdict": {"type": "string", "enum": ["yes", "no"]}},
    "required": ["evidence", "verdict"],
    "additionalProperties": False,
}
REFORMULATE_SCHEMA = {
    "type": "object",
    "properties": {
        "bool_positive": STR,
        "bool_negative": STR,
        "mc_question": STR,
        "correct_option": STR,
        "distractors": {"type": "array", "items": STR, "minItems": 3, "maxItems": 3},
        "bool_positive_grounding": GROUNDING,
        "bool_negative_grounding": GROUNDING,
        "mc_grounding": GROUNDING,
    },
    "required": [
        "bool_positive",
        "bool_negative",
        "mc_question",
        "correct_option",
        "distractors",
        "bool_positive_grounding",
        "bool_negative_grounding",
        "mc_grounding",
    ],
    "additionalProperties": False,
}
FAMILY = {"flickr30k_entities": "cross_modal", "visual_genome": "outside_knowledge"}


@dataclasses.dataclass(frozen=True)
class MethodConfig:
    """The method's knobs (defaults documented in the README)."""

    backend: str = "offline"
    model: str = "offline"
    seed: int = 0
    rounds: int = 2
    per_image: int = 3
    reformulate_share: float = 0.5
    min_caption_chars: int = 240
    max_objects: int = 60
    verify_reformulations: bool = True
    max_regions: int = (
        MAX_REGIONS  # region lines a call shows of a Visual Genome image (merged, most informative first)
    )

    def __post_init__(self) -> None:
        if not 0 <= self.reformulate_share <= 1 or self.rounds < 0 or self.per_image < 1 or self.max_regions < 1:
            raise ValueError("need 0 <= reformulate_share <= 1, rounds >= 0, per_image >= 1, max_regions >= 1")


def image_filter(ann: Annotation, cfg: MethodConfig) -> str | None:
    """The reason an image is not used (None: keep)."""
    if ann["source"] == "flickr30k_entities":
        chars = sum(len(c["text"]) for c in ann["captions"])
        return None if chars >= cfg.min_caption_chars else "filter_short_captions"
    if not ann["regions"]:
        return "filter_no_regions"
    return None if object_count(ann) <= cfg.max_objects else "filter_too_many_objects"


class Synthesize:
    """annotation record (+ ``_topic``) -> round-0 open-ended instructions."""

    name = "generate"

    def __init__(self, cfg: MethodConfig) -> None:
        self.cfg = cfg

    def calls(self, ann: Annotation, _same: Annotation | None = None) -> list[Call]:
        """The image's one call (its item is its annotation record: ``_same`` is that record again)."""
        topic = ann.get("_topic") or ""
        family = FAMILY[ann["source"]]
        topics = None
        if ann["source"] == "visual_genome":
            rng = random.Random(stable_int(self.cfg.seed, ann["image_id"], "topics"))
            topics = rng.sample(prompts.OKVQA_TOPICS, 5)
        user = prompts.generate_input(render(ann, self.cfg.max_regions), topics, topic or None)
        item_id = f"{ann['source']}/{ann['image_id']}"
        context = {
            "ann": ann,
            "family": family,
            "topic": topic or None,
            "n": self.cfg.per_image,
            "key": f"{self.cfg.seed}|{item_id}",
        }
        messages = prompts.conversation(self.name, family, user, self.cfg.per_image)
        return [Call(item_id, self.name, messages, "synthesized", GENERATE_SCHEMA, prompts.PROMPT_VERSION, context)]

    def handle(self, ann: Annotation, _same: Annotation | None, replies: list[dict[str, Any]]) -> Iterable[Emit]:
        items = replies[0]["items"]
        if not items:  # nothing to ask about this image: it ends in rejected/ with its own reason
            yield (
                REJECTED,
                {
                    "image_id": ann["image_id"],
                    "source": ann["source"],
                    "family": FAMILY[ann["source"]],
                    "stage": self.name,
                    "reason": "generate_nothing_to_ask",
                    "round": None,
                    "evidence": "no question the annotations can ground",
                },
            )
            return
        for index, qa in enumerate(items):
            yield OK, self._record(ann, index, qa)

    def _record(self, ann: Annotation, index: int, qa: dict[str, Any]) -> Instruction:
        return {
            "id": stable_id(ann["source"], ann["image_id"], 0, index, qa["instruction"], qa["answer"]),
            "image_id": ann["image_id"],
            "source": ann["source"],
            "image": ann["image"],
            "family": FAMILY[ann["source"]],
            "format": "open_ended",
            "instruction": qa["instruction"].strip(),
            "answer": qa["answer"].strip(),
            "round": 0,
            "parent_id": None,
            "knowledge_type": None,
            "knowledge_topic": qa["knowledge_topic"] or None,
            "verification": None,
            "llm": {"backend": self.cfg.backend, "model": self.cfg.model, "prompt_version": prompts.PROMPT_VERSION},
            "grounding": list(qa["grounding"]),
            "_unit": canonical_image(ann),
        }


def knowledge_type_for(item: Instruction, seed: int) -> str:
    """The kind of hop a complication is asked to add, among those its family allows (the reply says which kind it
    added)."""
    kinds = prompts.FAMILY_KNOWLEDGE_TYPES[item["family"]]
    return kinds[stable_int(seed, item["id"], item["round"]) % len(kinds)]


def item_call(
    stage: str,
    item: Instruction,
    ann: Annotation,
    schema_name: str,
    schema: dict[str, Any],
    cfg: MethodConfig,
    knowledge_type: str | None = None,
) -> Call:
    """The one call a later stage makes about an item: the stage's conversation ending in the image's annotations
    and the item, and the structured context an engine answers from (the annotations, the item, a seed)."""
    shown = (
        item
        if stage == "verify"
        else {k: v for k, v in item.items() if k not in ("_parent_instruction", "_parent_answer")}
    )
    user = prompts.item_input(render(ann, cfg.max_regions), shown, knowledge_type)
    context = {"ann": ann, "item": public(item), "key": f"{cfg.seed}|{item['id']}"}
    return Call(
        item["id"],
        stage,
        prompts.conversation(stage, item["family"], user),
        schema_name,
        schema,
        prompts.PROMPT_VERSION,
        context,
    )


class Complicate:
    """verified instruction of round r -> a harder one of round r+1 (child of it)."""

    name = "complicate"

    def __init__(self, cfg: MethodConfig) -> None:
        self.cfg = cfg

    def calls(self, item: Instruction, ann: Annotation) -> list[Call]:
        return [
            item_call(
                self.name,
                item,
                ann,
                "complicated",
                COMPLICATE_SCHEMA,
                self.cfg,
                knowledge_type_for(item, self.cfg.seed),
            )
        ]

    def handle(self, item: Instruction, ann: Annotation, replies: list[dict[str, Any]]) -> Iterable[Emit]:
        reply = replies[0]
        if not reply["instruction"].strip():  # nothing harder to ask: the item stays as it is
            yield SKIPPED, {"stage": self.name, "reason": "complicate_not_applicable", "item_id": item["id"]}
            return
        child = {
            **item,
            "instruction": reply["instruction"].strip(),
            "answer": reply["answer"].strip(),
            "grounding": list(reply["grounding"]),
            "round": item["round"] + 1,
            "parent_id": item["id"],
            "knowledge_type": reply["knowledge_type"],
            "verification": None,
            "_parent_instruction": item["instruction"],
            "_parent_answer": item["answer"],
        }
        child["id"] = stable_id(item["id"], child["round"], child["instruction"], child["answer"])
        yield OK, child


STOP_WORDS = frozenset("a an the is are of to in on and or what which who how why it this that be does do".split())
TEMPLATE_LEAKS = ("rewritten prompt", "given prompt", "#rewritten", "as an ai", "here is the rewritten")
# A refusal speaks for the model in the first person; "Why is the man unable to reach the shelf?" is a question.
_REFUSAL = re.compile(
    r"^\W*(?:(?:i'?m|i am|we are)\s+(?:sorry|unable|not able)|sorry\b|i\s+(?:cannot|can't|can ?not|won't)\b|as an "
    r"ai\b)",
    re.I,
)


def eliminate(item: Instruction) -> str | None:
    """Evol-Instruct's cheap elimination rules before the judge; a reason code or None."""
    text, parent = item["instruction"].strip(), item.get("_parent_instruction")
    lowered = text.lower()
    words = [w.strip(".,?!;:'\"") for w in lowered.split()]
    if parent is not None and " ".join(parent.lower().split()) == " ".join(lowered.split()):
        return "eliminate_no_information_gain"
    if len(words) < 12 and _REFUSAL.search(text):
        return "eliminate_refusal"
    if not [w for w in words if w and w not in STOP_WORDS]:
        return "eliminate_only_stop_words"
    if any(leak in lowered for leak in TEMPLATE_LEAKS):
        return "eliminate_template_leak"
    return None


class Verify:
    """instruction -> the same instruction with ``verification`` (ok) or a rejection with evidence."""

    name = "verify"

    def __init__(self, cfg: MethodConfig) -> None:
        self.cfg = cfg

    def calls(self, item: Instruction, ann: Annotation) -> list[Call]:
        return [item_call(self.name, item, ann, "verdict", VERIFY_SCHEMA, self.cfg)]

    def handle(self, item: Instruction, ann: Annotation, replies: list[dict[str, Any]]) -> Iterable[Emit]:
        reply = replies[0]
        passed = reply["verdict"] == "yes"
        verified = {**item, "verification": {"passed": passed, "evidence": reply["evidence"]}}
        if passed:
            yield OK, verified
        else:
            yield REJECTED, rejection(verified, f"{self.name}_rejected", self.name, reply["evidence"])


class VerifyReformulated(Verify):
    """A Bool or multiple-choice record -> the same record judged itself (its answer, each distractor), or a
    rejection."""

    name = "verify_reformulated"


def inherited(item: Instruction) -> Instruction:
    """A reformulated record that was not judged itself says whose verdict it carries."""
    return {**item, "verification": {"passed": None, "inherited_from": item["parent_id"]}}


def rejection(item: Instruction, reason: str, stage: str, evidence: str = "") -> dict[str, Any]:
    """A rejected-sink record: the item plus why it was dropped."""
    return {**public(item), "reason": reason, "stage": stage, "evidence": redact(evidence) or ""}


def reformulate_selected(item: Instruction, cfg: MethodConfig) -> bool:
    """Deterministic sampling of the items to reformulate."""
    return (stable_int(cfg.seed, item["id"], "reformulate") % 10_000) < cfg.reformulate_share * 10_000


def shuffle_options(item_id: str, correct: str, distractors: list[str]) -> tuple[list[str], int]:
    """Options shuffled by a seed derived from the item id; returns (options, answer_index)."""
    options = [correct, *distractors]
    random.Random(stable_int(item_id, "options")).shuffle(options)
    return options, options.index(correct)


class Reformulate:
    """verified open-ended instruction -> Bool yes, Bool no and 4-way multiple choice children."""

    name = "reformulate"

    def __init__(self, cfg: MethodConfig) -> None:
        self.cfg = cfg

    def calls(self, item: Instruction, ann: Annotation) -> list[Call]:
        return [item_call(self.name, item, ann, "reformulated", REFORMULATE_SCHEMA, self.cfg)]

    def handle(self, item: Instruction, ann: Annotation, replies: list[dict[str, Any]]) -> Iterable[Emit]:
        r = replies[0]
        if not r["bool_positive"].strip() or not r["bool_negative"].strip():
            yield SKIPPED, {"stage": self.name, "reason": "reformulate_not_applicable", "item_id": item["id"]}
            return
        base = {**item, "parent_id": item["id"], "verification": None}
        yield OK, self._child(base, "bool", r["bool_positive"], "yes", r["bool_positive_grounding"])
        yield OK, self._child(base, "bool", r["bool_negative"], "no", r["bool_negative_grounding"])
        if not r["mc_question"].strip():
            yield SKIPPED, {"stage": self.name, "reason": "reformulate_no_multiple_choice", "item_id": item["id"]}
            return
        distractors = [d.strip() for d in r["distractors"]]
        if len({r["correct_option"].strip(), *distractors}) < 4:
            raise ParseError("repeated_options", f"options repeat: {[r['correct_option'], *distractors]}")
        options, index = shuffle_options(item["id"], r["correct_option"].strip(), distractors)
        child = self._child(base, "multiple_choice", r["mc_question"], options[index], r["mc_grounding"])
        yield OK, {**child, "options": options, "answer_index": index}

    @staticmethod
    def _child(base: Instruction, fmt: str, question: str, answer: str, grounding: list[str]) -> Instruction:
        return {
            **base,
            "id": stable_id(base["parent_id"], fmt, question, answer),
            "format": fmt,
            "instruction": question.strip(),
            "answer": answer,
            "grounding": list(grounding) or list(base["grounding"]),
        }
