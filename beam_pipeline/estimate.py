"""``python -m beam_pipeline.estimate [job flags] [--estimate_images N] [--estimate_from OUTPUT] [--json]``:
what the run those flags describe would send and cost, before it is made. Sends no request.

Reads a seeded sample of each source's images (the images ``--limit`` would keep), renders every stage's
requests as the job would on them, counts their tokens with the model's tokenizer and projects the whole run
(see :mod:`comvint.estimate` for the model and its stated defaults).
"""

from __future__ import annotations

import argparse
import heapq
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

from apache_beam.io.filesystems import FileSystems

from beam_pipeline.files import exists, file_stem, join, read_bytes, read_text
from beam_pipeline.main import UsageError, make_options
from beam_pipeline.options import ComvintOptions
from beam_pipeline.pipeline import method_config, resolve_sources
from beam_pipeline.sources import id_order, resolve_split, resolve_unrelated, scene_files
from comvint import estimate, topics
from comvint.llm.config import ConfigError, LLMConfig, config_from_mapping
from comvint.readers import flickr30k, visual_genome
from comvint.records import InputError, stable_int

DEFAULT_IMAGES = 300
CHARS_PER_TOKEN = 4  # the stated fallback for a model without a known tokenizer


def tokenizer(model: str) -> tuple[Callable[[str], int], str]:
    """The model's token counter and its name: OpenAI's o200k_base (gpt-4o, gpt-4.1, gpt-5, o-series) or
    cl100k_base (gpt-4, gpt-3.5) with their tables built in (``bpe-openai``); else 1 token per 4 characters."""
    import bpe_openai

    name = model.lower().rsplit("/", 1)[-1]
    if name.startswith(("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o")):
        encoding = "o200k_base"
    elif name.startswith(("gpt-4", "gpt-3.5")):
        encoding = "cl100k_base"
    else:
        return (
            lambda text: -(-len(text) // CHARS_PER_TOKEN)
        ), f"{CHARS_PER_TOKEN} characters per token (no tokenizer known for {model})"
    enc = bpe_openai.get_encoding(encoding)
    return (lambda text: len(enc.encode(text))), encoding


def _rank(seed: int, image_id: str) -> int:
    return stable_int(seed, "estimate", image_id)


def limited(ids: list[str], limit: int) -> list[str]:
    """The ids ``--limit`` keeps (the smallest, as the job's reader keeps them)."""
    return sorted(ids, key=id_order)[:limit] if limit else ids


def flickr_sample(opts: ComvintOptions, root: str, n: int) -> tuple[int, list[dict[str, Any]], int]:
    """(images the run would read, a seeded sample of their records, how many sampled images fail to read)."""
    split = resolve_split(root, opts.flickr_split)
    xml = {file_stem(m.path): m.path for m in FileSystems.match([join(root, "Annotations", "*.xml")])[0].metadata_list}
    ids = limited([i for i in xml if split is None or i in split], opts.limit)
    unrelated = resolve_unrelated(root, opts.unrelated_captions, opts.keep_unrelated_captions)
    records, failed = [], 0
    for image_id in heapq.nsmallest(n, ids, key=lambda i: _rank(opts.seed, i)):
        try:
            records.append(
                flickr30k.build_record(
                    image_id,
                    read_bytes(join(root, "Sentences", f"{image_id}.txt")),
                    read_bytes(xml[image_id]),
                    unrelated,
                )
            )
        except (InputError, OSError):
            failed += 1  # the run sends it to failures/: no request
    return len(ids), records, failed


def _stream(path: str, key: str, image_data: dict | None = None) -> Iterator[dict[str, Any]]:
    with FileSystems.open(path, compression_type="uncompressed") as handle:
        for item in visual_genome.read_images(handle, path, 0, None, image_data, key):
            if isinstance(item, dict):
                yield item


def vg_sample(opts: ComvintOptions, regions: str, image_data: str | None, n: int) -> tuple[int, list[dict[str, Any]]]:
    """(images the run would read, a seeded sample of their records, with their scene graphs and topics).

    Without ``--limit`` the region file is read once (a bounded heap keeps the sample); with it, once for the
    ids the limit keeps and once for their records."""
    info = visual_genome.parse_image_data(read_text(image_data)) if image_data else None
    population = 0
    if opts.limit:
        kept = set(limited([r["image_id"] for r in _stream(regions, "regions")], opts.limit))
        population, candidates = len(kept), (r for r in _stream(regions, "regions", info) if r["image_id"] in kept)
    else:

        def counted() -> Iterator[dict[str, Any]]:
            nonlocal population
            for record in _stream(regions, "regions", info):
                population += 1
                yield record

        candidates = counted()
    picked = heapq.nsmallest(n, candidates, key=lambda r: _rank(opts.seed, r["image_id"]))
    records = {r["image_id"]: r for r in picked}
    chosen = set(records)
    parts: dict[str, list] = {}
    for key, path in scene_files(regions, opts.vg_objects, opts.vg_attributes, opts.vg_relationships).items():
        for part in _stream(path, key):
            if part["image_id"] in chosen:
                parts.setdefault(part["image_id"], []).append(part)
    anns = [visual_genome.attach_scene(records[i], parts.get(i, [])) for i in sorted(records)]
    df: dict[str, int] = {}
    for ann in anns:  # document frequency over the sample: the topic is a few words of the request
        for term in topics.object_terms(ann):
            df[term] = df.get(term, 0) + 1
    return population, [{**a, "_topic": topics.rarest(topics.object_terms(a), df)} for a in anns]


def project_run(argv: list[str]) -> dict[str, Any]:
    """The projection (JSON-ready) of the run ``argv`` describes."""
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--estimate_images", type=int, default=DEFAULT_IMAGES)
    own.add_argument("--estimate_from", default=None)
    own.add_argument("--json", action="store_true")
    mine, job_argv = own.parse_known_args(argv)
    options = make_options(job_argv)
    opts = options.view_as(ComvintOptions)
    llm = config_from_mapping({**opts.get_all_options(), "llm": "openai"})  # priced as the OpenAI path sends it
    cfg = method_config(opts, llm)
    flickr_root, vg_regions, vg_image_data = resolve_sources(opts)
    population, sample, unreadable = {}, [], {}
    if flickr_root:
        population["flickr30k_entities"], anns, unreadable["flickr30k_entities"] = flickr_sample(
            opts, flickr_root, mine.estimate_images
        )
        sample += anns
    if vg_regions:
        population["visual_genome"], anns = vg_sample(opts, vg_regions, vg_image_data, mine.estimate_images)
        sample += anns
    count, encoding = tokenizer(llm.model)
    picture = estimate.picture_cost(llm.model_for, llm.image_detail, llm.image_tokens)
    sizes, kept = estimate.measure(sample, cfg, count, llm.image_stages, picture, opts.verify_reformulations)
    for source, failed in unreadable.items():  # an image that fails to read sends nothing
        kept.setdefault(source, []).extend([False] * failed)
    rates = estimate.DEFAULT_RATES
    if mine.estimate_from:
        stats_path = join(mine.estimate_from, "stats.json")
        if not exists(stats_path):
            raise UsageError(
                f"--estimate_from {mine.estimate_from}: no stats.json there (the output folder of a finished run)"
            )
        rates = estimate.rates_from_stats(json.loads(read_text(stats_path)))
    projection = estimate.project(
        population, kept, sizes, rates, cfg, llm.max_tokens, pricing(llm), opts.verify_reformulations
    )
    return {
        **{k: projection[k] for k in ("requests", "prompt_tokens", "completion_tokens", "cost_usd")},
        "hours": estimate.hours(projection, opts.llm_rpm, opts.llm_tpm, llm.mode == "batch", cfg.rounds),
        "by_stage": projection["by_stage"],
        "inputs": {
            "images": population,
            "sampled": {s: len(k) for s, k in kept.items()},
            "kept_by_image_filter": {s: round(sum(k) / len(k), 3) for s, k in kept.items() if k},
        },
        "assumptions": {
            "rates": {case: vars(r) for case, r in rates.items()},
            "rates_from": mine.estimate_from or "stated defaults (comvint/estimate.py DEFAULT_RATES)",
            "tokenizer": encoding,
            "model": llm.model,
            "mode": llm.mode,
            "picture_stages": list(llm.image_stages),
            "completion_tokens": "low: half the engine's reply, expected: the engine's reply, high: --llm_max_tokens",
            "hours": "online: the slower of --llm_rpm and --llm_tpm (none given: null); batch: one batch per stage "
            "wave, "
            f"{estimate.BATCH_WAVE_HOURS} hours each",
        },
    }


def pricing(llm: LLMConfig) -> estimate.Pricing:
    models = {stage: llm.model_for(stage) for stage in estimate.STAGES}
    prices = {name: (per_in, per_out) for name, per_in, per_out in llm.prices}
    return estimate.Pricing(models, prices, llm.batch_discount if llm.mode == "batch" else 0.0)


def format_table(result: dict[str, Any]) -> str:
    rows = [("", *estimate.CASES)]
    for key in ("requests", "prompt_tokens", "completion_tokens", "cost_usd", "hours"):
        rows.append((key, *("-" if result[key][c] is None else f"{result[key][c]:,}" for c in estimate.CASES)))
    width = [max(len(str(r[i])) for r in rows) for i in range(4)]
    lines = [
        "  ".join(str(v).rjust(w) if i else str(v).ljust(w) for i, (v, w) in enumerate(zip(r, width, strict=True)))
        for r in rows
    ]
    inputs = result["inputs"]
    return "\n".join(
        [
            f"ComVint estimate (no request sent): {inputs['images']} images, sampled {inputs['sampled']}",
            *lines,
            f"tokenizer: {result['assumptions']['tokenizer']}; rates: {result['assumptions']['rates_from']}",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "-h" in argv or "--help" in argv:
        print(
            __doc__.strip() + "\n\n  --estimate_images N    images sampled per source (default "
            f"{DEFAULT_IMAGES})\n  --estimate_from DIR    an earlier run's output: its measured rates\n"
            "  --json                 one JSON object\n\nEvery job flag is taken as the job takes it: "
            "python -m beam_pipeline.main --help"
        )
        return
    try:
        result = project_run(argv)
    except (UsageError, ConfigError, ValueError) as err:  # a flag the job would refuse too (ConfigError is one)
        print(f"comvint estimate: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(result) if "--json" in argv else format_table(result))


if __name__ == "__main__":
    main()
