"""build_pipeline(options): the whole ComVint job as a (not yet run) Beam pipeline."""

from __future__ import annotations

import uuid

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from beam_pipeline.dedup import DeduplicateInstructions
from beam_pipeline.exports import ExportInstructions, ReviewSample, parse_formats
from beam_pipeline.filters import FilterInstructions
from beam_pipeline.lake import CommitToLake
from beam_pipeline.method import GenerateComplexInstructions, funnel_marks
from beam_pipeline.options import SAMPLE_FLICKR, SAMPLE_VG, SAMPLE_VG_IMAGE_DATA, ComvintOptions, content_settings
from beam_pipeline.report import SampleForReport, write_card, write_report
from beam_pipeline.run_stage import SpreadPacked
from beam_pipeline.sinks import WriteConvertFiles, WriteJsonLines
from beam_pipeline.sources import Read, ReadFlickr30k, ReadVisualGenome, resolve_split, resolve_unrelated, scene_files
from beam_pipeline.stats import SummarizeRun
from comvint import dedup, lake
from comvint import stats as run_stats
from comvint.filters import FilterConfig
from comvint.item import public, with_unit
from comvint.llm.config import LLMConfig, config_from_mapping
from comvint.stages.method import MethodConfig


def method_config(opts: ComvintOptions, llm: LLMConfig) -> MethodConfig:
    return MethodConfig(
        backend=llm.backend,
        model=llm.model if llm.backend == "openai" else "offline",
        seed=opts.seed,
        rounds=opts.rounds,
        reformulate_share=opts.reformulate_share,
        min_caption_chars=opts.min_caption_chars,
        max_objects=opts.max_objects,
        verify_reformulations=opts.verify_reformulations,
        max_regions=opts.llm_max_regions,
    )


# Runners that hold every shuffle in one process's memory until its consumer runs.
IN_MEMORY_RUNNERS = {"FnApiRunner", "DirectRunner", "SwitchingDirectRunner", "BundleBasedDirectRunner"}


def band_waves(opts: ComvintOptions) -> int:
    """``--dedup_band_waves``, or when 0: one LSH band at a time on an in-memory runner, all at once elsewhere."""
    if opts.dedup_band_waves > 0:
        return opts.dedup_band_waves
    runner = opts.view_as(StandardOptions).runner
    name = runner if isinstance(runner, str) else type(runner).__name__
    return dedup.BANDS if name.rsplit(".", 1)[-1] in IN_MEMORY_RUNNERS else 1


def resolve_sources(opts: ComvintOptions) -> tuple[str | None, str | None, str | None]:
    """(flickr_root, vg_regions, vg_image_data); the bundled sample when none is given."""
    if not opts.flickr_root and not opts.vg_regions:
        return SAMPLE_FLICKR, SAMPLE_VG, SAMPLE_VG_IMAGE_DATA
    return opts.flickr_root, opts.vg_regions, opts.vg_image_data


def read_annotations(p: beam.Pipeline, opts: ComvintOptions) -> Read:
    """Read every configured source; return the merged (records, failures)."""
    flickr_root, vg_regions, vg_image_data = resolve_sources(opts)
    reads = []
    if flickr_root:
        split = resolve_split(flickr_root, opts.flickr_split)
        unrelated = resolve_unrelated(flickr_root, opts.unrelated_captions, opts.keep_unrelated_captions)
        reads.append(p | "ReadFlickr30k" >> ReadFlickr30k(flickr_root, split, unrelated, opts.limit))
    if vg_regions:
        reads.append(
            p
            | "ReadVisualGenome"
            >> ReadVisualGenome(
                vg_regions,
                vg_image_data,
                opts.vg_split_mb << 20,
                opts.limit,
                scene_files(vg_regions, opts.vg_objects, opts.vg_attributes, opts.vg_relationships),
            )
        )
    records = [r.records for r in reads] | "MergeAnnotations" >> beam.Flatten()
    failures = [r.failures for r in reads] | "MergeIngestFailures" >> beam.Flatten()
    return Read(records, failures)


def lake_of(options: PipelineOptions, run_id: str) -> lake.LakeConfig | None:
    """``--lake``'s tables, or None; a lake needs the whole method (``--stages all``)."""
    opts = options.view_as(ComvintOptions)
    if not opts.lake:
        return None
    if opts.stages == "ingest":
        raise lake.LakeError("--lake commits instructions: it needs --stages all, not ingest")
    return lake.lake_config(
        opts.lake,
        opts.output,
        opts.lake_table,
        opts.lake_catalog,
        opts.lake_uri,
        run_id,
        lake.config_hash(content_settings(options)),
    )


def build_pipeline(options: PipelineOptions) -> beam.Pipeline:
    """Assemble the job described by ``options`` (see ComvintOptions)."""
    opts = options.view_as(ComvintOptions)
    run_id = uuid.uuid4().hex
    tables = lake_of(options, run_id)
    p = beam.Pipeline(options=options)
    annotations, failures = read_annotations(p, opts)
    # Key first, then flatten: a Flatten of whole records keeps them all in the local runner's memory.
    inputs = (
        annotations | "RecordUnits" >> beam.Map(run_stats.unit_of),
        failures | "FailureUnits" >> beam.Map(run_stats.unit_of),
    ) | "InputUnits" >> beam.Flatten()
    if opts.stages == "ingest" or opts.write_annotations:
        annotations | "WriteAnnotations" >> WriteJsonLines(opts.output, "annotations")
    if opts.write_convert:
        annotations | "WriteConvert" >> WriteConvertFiles(opts.output)
    if opts.stages == "ingest":
        sinks, extra = {"failures": failures, "annotations": annotations}, {}
    else:
        sinks, extra = run_method(annotations, failures, opts, run_id)
    sinks["clipped_boxes"] = annotations | "ClippedBoxes" >> beam.FlatMap(
        lambda a: [{"source": a["source"]}] * a.get("clipped_boxes", 0)
    )
    stats = {"inputs": inputs, **sinks} | "SummarizeRun" >> SummarizeRun(opts.output, {"stages": opts.stages, **extra})
    write_outputs(sinks, stats, opts)
    if tables:
        {k: sinks[k] for k in ("instructions", "rejected")} | "CommitToLake" >> CommitToLake(
            tables, opts.output, stats, opts.num_shards, shard_bytes(opts)
        )
    if opts.stages != "ingest":
        report_run(annotations, sinks, stats, opts)
    return p


def run_method(annotations, failures, opts: ComvintOptions, run_id: str) -> tuple[dict[str, beam.PCollection], dict]:
    """The method, quality filters and dedup: the run's sinks (and what stats.json counts) and its settings."""
    llm = config_from_mapping({**opts.get_all_options(), "run_id": run_id})
    method = (
        annotations
        | "SpreadAnnotations" >> SpreadPacked()
        | "RunMethod" >> GenerateComplexInstructions(method_config(opts, llm), llm)
    )
    screened = (
        method.instructions
        | "MarkImages" >> beam.Map(with_unit)
        | "FilterInstructions" >> FilterInstructions(FilterConfig(opts.max_instruction_chars, opts.max_answer_chars))
    )
    unique = screened.kept | "DeduplicateInstructions" >> DeduplicateInstructions(
        opts.max_per_cluster, opts.dedup_threshold, waves=band_waves(opts)
    )
    steps = {"images": annotations, "after_filters": screened.kept, "after_dedup": unique.kept}
    sinks = {
        "instructions": unique.kept | "Publish" >> beam.Map(public),
        "rejected": (method.rejected, screened.rejected, unique.rejected) | "MergeRejected" >> beam.Flatten(),
        "failures": (failures, method.failed) | "MergeFailures" >> beam.Flatten(),
        "llm": method.usage,
        "verdicts": method.verdicts,
        "skipped": method.skipped,
        "items": method.created,
        "funnel": (method.funnel, *funnel_marks(steps)) | "MergeFunnel" >> beam.Flatten(),
    }
    extra = {
        "llm_backend": llm.backend,
        "llm_mode": llm.mode,
        "rounds": opts.rounds,
        "max_per_cluster": opts.max_per_cluster,
        "dedup_threshold": opts.dedup_threshold,
        "exports": list(parse_formats(opts.export)),
    }
    return sinks, extra


def write_outputs(sinks: dict[str, beam.PCollection], stats, opts: ComvintOptions) -> None:
    """Write instructions, rejected, failures and the exports, each only once the accounting check passed."""
    target = shard_bytes(opts)

    def write(name: str, key):
        return WriteJsonLines(opts.output, name, opts.num_shards, sort_key=key, gate=stats, target_bytes=target)

    sinks["failures"] | "WriteFailures" >> write("failures", _failure_key)
    if "instructions" not in sinks:
        return
    instructions = sinks["instructions"]
    instructions | "WriteInstructions" >> write("instructions", _id_key)
    sinks["rejected"] | "WriteRejected" >> write("rejected", _rejected_key)
    formats = parse_formats(opts.export)
    if formats:
        checked = instructions | "AfterAccounting" >> beam.Map(lambda record, _: record, beam.pvalue.AsSingleton(stats))
        review = ReviewSample(opts.review_tasks, opts.seed, opts.image_root)
        checked | "Export" >> ExportInstructions(opts.output, formats, opts.num_shards, target, review)


def shard_bytes(opts: ComvintOptions) -> int:
    """How many bytes of JSON one shard holds when ``--num_shards`` is 0."""
    return max(1, int(opts.shard_mb * (1 << 20)))


def report_run(annotations, sinks: dict[str, beam.PCollection], stats, opts: ComvintOptions) -> None:
    """Write the report's sample and, once stats.json is written, ``report.html`` and the dataset card."""
    entries = {"annotations": annotations, **{k: sinks[k] for k in ("instructions", "rejected", "failures")}} | (
        "SampleForReport" >> SampleForReport(opts.report_images_per_source, opts.seed)
    )
    entries | "WriteReportSample" >> WriteJsonLines(opts.output, "report_sample", 1, sort_key=_unit_key)
    stats | "WriteReport" >> beam.Map(write_report, opts.output, opts.image_root, beam.pvalue.AsList(entries))
    stats | "WriteCard" >> beam.Map(write_card, opts.output)


def _unit_key(entry) -> str:
    return entry["unit"]


def _id_key(record) -> str:
    return record["id"]


def _rejected_key(record) -> str:
    return "|".join(str(record.get(k)) for k in ("source", "image_id", "id", "stage", "reason", "round"))


def _failure_key(failure) -> str:
    return "|".join(
        str(v) for v in (failure.unit_key(), failure.stage, failure.item_id, failure.reason, failure.detail)
    )
