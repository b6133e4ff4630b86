"""The method as composite PTransforms: filter, topic, synthesize, complicate ⟲ verify, reformulate."""

from __future__ import annotations

from typing import Any, NamedTuple

import apache_beam as beam

from beam_pipeline.run_stage import RunStage, StageResult
from comvint import topics
from comvint.llm.config import LLMConfig
from comvint.records import pack, unpack
from comvint.stages.base import OK, REJECTED
from comvint.stages.method import (
    FAMILY,
    Complicate,
    MethodConfig,
    Reformulate,
    Synthesize,
    Verify,
    VerifyReformulated,
    eliminate,
    image_filter,
    inherited,
    reformulate_selected,
    rejection,
)
from comvint.stats import unit_of


class MethodResult(NamedTuple):
    instructions: beam.PCollection
    rejected: beam.PCollection
    failed: beam.PCollection
    usage: beam.PCollection
    verdicts: beam.PCollection
    funnel: beam.PCollection  # one {"step": name} per item (or image) reaching a step of the method
    skipped: beam.PCollection  # items a stage had nothing to make of (they stay where they are)
    created: beam.PCollection  # the id of every item any stage created


def _filter(ann: dict[str, Any], cfg: MethodConfig):
    reason = image_filter(ann, cfg)
    if reason is None:
        yield ann
    else:
        yield beam.pvalue.TaggedOutput(
            REJECTED,
            {
                "image_id": ann["image_id"],
                "source": ann["source"],
                "family": FAMILY[ann["source"]],
                "stage": "filter",
                "reason": reason,
                "round": None,
            },
        )


def _eliminate(item: dict[str, Any]):
    reason = item["round"] > 0 and eliminate(item)
    yield beam.pvalue.TaggedOutput(REJECTED, rejection(item, reason, "eliminate")) if reason else item


class AttachTopics(beam.PTransform):
    """Annotation records -> the same, VG ones with ``_topic``: the rarest object by corpus-wide document frequency
    (:mod:`comvint.topics`; the frequencies are a side input)."""

    def expand(self, anns):
        df = (
            anns
            | "OnlyVisualGenome" >> beam.Filter(lambda a: a["source"] == "visual_genome")
            | "ObjectsPerImage" >> beam.FlatMap(lambda a: list(topics.object_terms(a)))
            | "DocumentFrequency" >> beam.combiners.Count.PerElement()
        )
        return anns | "PickTopic" >> beam.Map(
            lambda a, freq: (
                {**a, "_topic": topics.rarest(topics.object_terms(a), freq)} if a["source"] == "visual_genome" else a
            ),
            beam.pvalue.AsDict(df),
        )


class StageOutputs:
    """What the method's stages send aside as they run (rejected items, dead letters, usage, skips), collected
    in one place so that the wiring reads like the method (the role of Beam's ``ErrorHandler``)."""

    def __init__(self, *rejected: beam.PCollection) -> None:
        self.rejected, self.failed, self.usage, self.skipped = list(rejected), [], [], []

    def add(self, result: StageResult) -> StageResult:
        """Collect a stage's side outputs; its items (``result.ok``) go on."""
        self.rejected.append(result.rejected)
        self.failed.append(result.failed)
        self.usage.append(result.usage)
        self.skipped.append(result.skipped)
        return result


def flatten_packed(pcolls: list[beam.PCollection], name: str) -> beam.PCollection:
    """Records of several PCollections as one PCollection of packed records (``Pack<name><k>``, ``Merge<name>``).

    A Flatten's inputs wait, whole, in the local runner's memory until its consumer runs, so what crosses one
    is packed; :func:`unpack_records` reads them after it."""
    return [pc | f"Pack{name}{k}" >> beam.Map(pack) for k, pc in enumerate(pcolls)] | f"Merge{name}" >> beam.Flatten()


def unpack_records(packed: beam.PCollection, name: str) -> beam.PCollection:
    return packed | f"Unpack{name}" >> beam.Map(unpack)


class GenerateComplexInstructions(beam.PTransform):
    """Annotation records -> MethodResult: the whole method with R complicate ⟲ verify rounds."""

    def __init__(self, cfg: MethodConfig, llm: LLMConfig) -> None:
        super().__init__()
        self._cfg, self._llm = cfg, llm

    def expand(self, anns) -> MethodResult:
        cfg, llm = self._cfg, self._llm
        kept = anns | "FilterImages" >> beam.FlatMap(_filter, cfg).with_outputs(REJECTED, main=OK)
        topics = kept[OK] | "AttachTopics" >> AttachTopics()
        aside = StageOutputs(kept[REJECTED])
        # Synthesize: the annotations were spread over the workers just before (SpreadAnnotations): no second reshuffle.
        generated = aside.add(topics | "GenerateInstructions" >> RunStage(Synthesize(cfg), llm, reshuffle=False))
        # Later stages are handed each item beside its image's record: one copy per image in a shuffle, not one per
        # item.
        records = topics | "PackAnnotations" >> beam.Map(lambda a: (unit_of(a), pack(a)))
        steps = {"images_used": kept[OK], "synthesized": generated.ok}
        verified, verdicts, created = [], [], [generated.ok]
        candidates = generated.ok
        for r in range(cfg.rounds + 1):  # eliminate, verify, then complicate what passed (all but the last round)
            checked = candidates | f"EliminateRound{r}" >> beam.FlatMap(_eliminate).with_outputs(REJECTED, main=OK)
            aside.rejected.append(checked[REJECTED])
            judged = aside.add(checked[OK] | f"VerifyRound{r}" >> RunStage(Verify(cfg), llm, annotations=records))
            verified.append(judged.ok)
            steps[f"verified_round_{r}"] = judged.ok
            verdicts += [
                judged.ok | f"PassedRound{r}" >> beam.Map(_verdict, "passed"),
                judged.rejected | f"FailedRound{r}" >> beam.Map(_verdict, "failed"),
            ]
            if r < cfg.rounds:
                candidates = aside.add(
                    judged.ok | f"ComplicateRound{r + 1}" >> RunStage(Complicate(cfg), llm, annotations=records)
                ).ok
                steps[f"complicated_round_{r + 1}"] = candidates
                created.append(candidates)
        all_verified = flatten_packed(verified, "Verified")
        chosen = unpack_records(all_verified, "Verified") | "ChooseForReformulation" >> beam.Filter(
            reformulate_selected, cfg
        )
        closed = aside.add(chosen | "ReformulateInstructions" >> RunStage(Reformulate(cfg), llm, annotations=records))
        steps["reformulated"] = closed.ok
        created.append(closed.ok)
        if cfg.verify_reformulations:  # each Bool and multiple-choice record judged itself
            closed_ok = aside.add(
                closed.ok | "VerifyReformulations" >> RunStage(VerifyReformulated(cfg), llm, annotations=records)
            ).ok
            steps["verified_reformulated"] = closed_ok
        else:
            closed_ok = closed.ok | "InheritVerdicts" >> beam.Map(inherited)
        instructions = (
            all_verified,
            closed_ok | "PackReformulated" >> beam.Map(pack),
        ) | "MergeFormats" >> beam.Flatten()
        return MethodResult(
            unpack_records(instructions, "Instructions"),
            aside.rejected | "MergeRejected" >> beam.Flatten(),
            aside.failed | "MergeFailed" >> beam.Flatten(),
            aside.usage | "MergeUsage" >> beam.Flatten(),
            verdicts | "MergeVerdicts" >> beam.Flatten(),
            funnel_marks(steps) | "MergeFunnel" >> beam.Flatten(),
            aside.skipped | "MergeSkipped" >> beam.Flatten(),
            [pc | f"CreatedIds{k}" >> beam.Map(lambda it: it["id"]) for k, pc in enumerate(created)]
            | "MergeCreated" >> beam.Flatten(),
        )


def funnel_marks(steps: dict[str, beam.PCollection]) -> list[beam.PCollection]:
    """One ``{"step": name}`` per element of each named PCollection (counted for the report's funnel)."""
    return [pcoll | f"Funnel_{name}" >> beam.Map(lambda _, step=name: {"step": step}) for name, pcoll in steps.items()]


def _verdict(item: dict[str, Any], verdict: str) -> dict[str, Any]:
    """What stats.json counts of one judge decision."""
    return {"round_verdict": f"{item['round']}:{verdict}"}
