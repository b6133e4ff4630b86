"""The method as composite PTransforms: filter, topic, synthesize, complicate ⟲ verify, reformulate."""

from __future__ import annotations

from typing import Any, NamedTuple

import apache_beam as beam

from beam_pipeline.stages import RunStage
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
        yield beam.pvalue.TaggedOutput(REJECTED, {"image_id": ann["image_id"], "source": ann["source"], "family": FAMILY[ann["source"]],
                                                  "stage": "filter", "reason": reason, "round": None})


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
            lambda a, freq: {**a, "_topic": topics.rarest(topics.object_terms(a), freq)} if a["source"] == "visual_genome" else a,
            beam.pvalue.AsDict(df),
        )


class GenerateComplexInstructions(beam.PTransform):
    """Annotation records -> MethodResult: the whole method with R complicate ⟲ verify rounds."""

    def __init__(self, cfg: MethodConfig, llm: LLMConfig) -> None:
        super().__init__()
        self._cfg, self._llm = cfg, llm

    def expand(self, anns) -> MethodResult:
        cfg, llm = self._cfg, self._llm
        kept = anns | "FilterImages" >> beam.FlatMap(_filter, cfg).with_outputs(REJECTED, main=OK)
        topics = kept[OK] | "AttachTopics" >> AttachTopics()
        # The annotations were spread over the workers just before (SpreadAnnotations): no second reshuffle.
        generated = topics | "GenerateInstructions" >> RunStage(Synthesize(cfg), llm, reshuffle=False)
        # Later stages join each item to its image's record: one copy per image in a shuffle, not one per item.
        anns = topics | "PackAnnotations" >> beam.Map(lambda a: (unit_of(a), pack(a)))
        rejected, failed, usage, verified, verdicts = [kept[REJECTED], generated.rejected], [generated.failed], [generated.usage], [], []
        steps, complicated, skipped = {"images_used": kept[OK], "synthesized": generated.ok}, [], []
        candidates = generated.ok
        for r in range(cfg.rounds + 1):
            checked = candidates | f"EliminateRound{r}" >> beam.FlatMap(_eliminate).with_outputs(REJECTED, main=OK)
            judged = checked[OK] | f"VerifyRound{r}" >> RunStage(Verify(cfg), llm, annotations=anns)
            rejected += [checked[REJECTED], judged.rejected]
            failed.append(judged.failed)
            usage.append(judged.usage)
            verified.append(judged.ok)
            steps[f"verified_round_{r}"] = judged.ok
            verdicts += [
                judged.ok | f"PassedRound{r}" >> beam.Map(_verdict, "passed"),
                judged.rejected | f"FailedRound{r}" >> beam.Map(_verdict, "failed"),
            ]
            if r < cfg.rounds:
                harder = judged.ok | f"ComplicateRound{r + 1}" >> RunStage(Complicate(cfg), llm, annotations=anns)
                failed.append(harder.failed)
                usage.append(harder.usage)
                candidates = harder.ok
                steps[f"complicated_round_{r + 1}"] = harder.ok
                complicated.append(harder.ok)
                skipped.append(harder.skipped)
        # A Flatten's inputs wait, whole, in the local runner's memory until its consumer runs (here: until
        # the last round is verified), so what crosses one is packed.
        all_verified = [v | f"PackVerified{r}" >> beam.Map(pack) for r, v in enumerate(verified)] | "MergeVerified" >> beam.Flatten()
        chosen = (
            all_verified
            | "UnpackVerified" >> beam.Map(unpack)
            | "ChooseForReformulation" >> beam.Filter(reformulate_selected, cfg)
        )
        closed = chosen | "ReformulateInstructions" >> RunStage(Reformulate(cfg), llm, annotations=anns)
        steps["reformulated"] = closed.ok
        rejected, failed, usage = [*rejected, closed.rejected], [*failed, closed.failed], [*usage, closed.usage]
        if cfg.verify_reformulations:  # each Bool and multiple-choice record judged itself
            judged_closed = closed.ok | "VerifyReformulations" >> RunStage(VerifyReformulated(cfg), llm, annotations=anns)
            rejected, failed, usage = [*rejected, judged_closed.rejected], [*failed, judged_closed.failed], [*usage, judged_closed.usage]
            closed_ok = steps["verified_reformulated"] = judged_closed.ok
        else:
            closed_ok = closed.ok | "InheritVerdicts" >> beam.Map(inherited)
        created = [generated.ok, *complicated, closed.ok]
        return MethodResult(
            (all_verified, closed_ok | "PackReformulated" >> beam.Map(pack))
            | "MergeFormats" >> beam.Flatten()
            | "UnpackInstructions" >> beam.Map(unpack),
            rejected | "MergeRejected" >> beam.Flatten(),
            failed | "MergeFailed" >> beam.Flatten(),
            usage | "MergeUsage" >> beam.Flatten(),
            verdicts | "MergeVerdicts" >> beam.Flatten(),
            funnel_marks(steps) | "MergeFunnel" >> beam.Flatten(),
            (closed.skipped, *skipped) | "MergeSkipped" >> beam.Flatten(),
            [pc | f"CreatedIds{k}" >> beam.Map(lambda it: it["id"]) for k, pc in enumerate(created)] | "MergeCreated" >> beam.Flatten(),
        )


def funnel_marks(steps: dict[str, beam.PCollection]) -> list[beam.PCollection]:
    """One ``{"step": name}`` per element of each named PCollection (counted for the report's funnel)."""
    return [pcoll | f"Funnel_{name}" >> beam.Map(lambda _, step=name: {"step": step}) for name, pcoll in steps.items()]


def _verdict(item: dict[str, Any], verdict: str) -> dict[str, Any]:
    """What stats.json counts of one judge decision."""
    return {"round_verdict": f"{item['round']}:{verdict}"}
