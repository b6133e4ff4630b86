"""The whole offline job at a fraction of the datasets' size (default: a tenth), on the local runner.

    python bench/scale_bench.py                  # 3,178 Flickr30k + 10,808 Visual Genome images (25-75 regions)
    python bench/scale_bench.py --scale 1.0      # the full datasets' size: 31,783 + 108,077 images

Writes the corpora (bench/corpora.py: the bundled sample's vocabulary, in the real formats), runs
``python -m beam_pipeline.main`` on them in its own process, and reports wall time, peak memory of
the process tree, and what the run kept: instructions per usable image overall and per family,
the formats and rounds present, the share of generated items removed as template repeats, and the
failures. One JSON line per run on stdout (``--json``) or a table.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import measure  # noqa: E402
from bench.corpora import generate_flickr, generate_vg  # noqa: E402

FLICKR_IMAGES, VG_IMAGES = 31_783, 108_077
FAMILY = {"flickr30k_entities": "cross_modal", "visual_genome": "outside_knowledge"}


def _lines(out: str, name: str):
    for path in sorted(glob.glob(os.path.join(out, name, "*.jsonl"))):
        with open(path, encoding="utf-8") as handle:
            yield from (json.loads(line) for line in handle)


def summarise(out: str, images: dict[str, int]) -> dict:
    """What the run kept, per usable image (an image read and not filtered out)."""
    stats = json.load(open(os.path.join(out, "stats.json")))
    unused = {family: 0 for family in FAMILY.values()}
    for record in _lines(out, "rejected"):
        if record["stage"] == "filter":
            unused[record["family"]] += 1
    failed_images = {family: 0 for family in FAMILY.values()}
    for failure in _lines(out, "failures"):
        if failure["stage"] in ("ingest", "generate"):
            failed_images[FAMILY[failure["source"]]] += 1
    kept = stats["counts"]["instructions"]
    usable = {FAMILY[s]: n - unused[FAMILY[s]] - failed_images[FAMILY[s]] for s, n in images.items()}
    created = stats["accounting"]["items"]["created"]
    repeats = stats["counts"]["rejected"]["reason"].get("template_repeat", 0)
    return {
        "usable_images": usable,
        "kept": kept["total"],
        "kept_per_usable_image": round(kept["total"] / max(1, sum(usable.values())), 2),
        "kept_per_usable_image_by_family": {
            f: round(kept["family"].get(f, 0) / max(1, n), 2) for f, n in usable.items()
        },
        "formats": kept.get("format", {}),
        "rounds": kept.get("round", {}),
        "template_repeat_share_of_created": round(repeats / max(1, created), 3),
        "rejected_by_reason": stats["counts"]["rejected"]["reason"],
        "failures_by_reason": stats["counts"].get("failures", {}).get("reason", {}),
        "skipped": stats["counts"].get("skipped", {}).get("reason", {}),
    }


def item_bytes(flickr: str, vg: str, n: int = 200) -> dict:
    """Bytes of one round-0 item as it crosses a stage shuffle, packed (``pack``: pickle and zlib with a preset
    dictionary) without its image's annotation record, which joins it once per image (``annotation``, packed);
    and, for comparison, the earlier layouts, pickled: with the packed record in every item
    (``with_packed_record``) and with it as nested dicts (``with_nested_record``, the first). Items no longer
    carry the record (a stage is handed it beside the item), so both are rebuilt here for the comparison."""
    import pickle

    from comvint.readers import flickr30k, visual_genome
    from comvint.records import pack
    from comvint.stages.method import MethodConfig, Synthesize

    anns = []
    for name in sorted(os.listdir(os.path.join(flickr, "Sentences")))[:n]:
        stem = name[:-4]
        with (
            open(os.path.join(flickr, "Sentences", name), "rb") as s,
            open(os.path.join(flickr, "Annotations", stem + ".xml"), "rb") as x,
        ):
            anns.append(flickr30k.build_record(stem, s.read(), x.read()))
    with open(vg, "rb") as handle:
        for k, ann in enumerate(visual_genome.read_images(handle, vg)):
            if k >= n:
                break
            anns.append(ann)
    stage, sizes = (
        Synthesize(MethodConfig()),
        {"item": [], "annotation": [], "with_packed_record": [], "with_nested_record": []},
    )
    for ann in anns:
        item = stage._record(
            ann,
            0,
            {
                "instruction": "Which is further to the left: the dog or the bike?",
                "answer": "The dog.",
                "grounding": ["left_of(e:1,e:2)"],
                "knowledge_topic": "",
            },
        )
        sizes["item"].append(len(pack(item)))
        sizes["annotation"].append(len(pack(ann)))
        sizes["with_packed_record"].append(len(pickle.dumps({**item, "_ann": pack(ann)}, pickle.HIGHEST_PROTOCOL)))
        sizes["with_nested_record"].append(len(pickle.dumps({**item, "_ann": ann}, pickle.HIGHEST_PROTOCOL)))
    return {k: round(sum(v) / len(v)) for k, v in sizes.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.1)
    parser.add_argument("--work", default=None, help="folder for corpora and outputs (default: a temporary one)")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    parser.add_argument("job_args", nargs="*", help="extra flags for the job (after --)")
    args = parser.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="comvint-scale-")
    images = {"flickr30k_entities": round(FLICKR_IMAGES * args.scale), "visual_genome": round(VG_IMAGES * args.scale)}
    flickr, vg, out = os.path.join(work, "flickr"), os.path.join(work, "vg.json"), os.path.join(work, "out")
    if not os.path.exists(vg):
        generate_flickr(flickr, images["flickr30k_entities"])
        generate_vg(vg, images["visual_genome"])
    run = measure(
        ["-m", "beam_pipeline.main", "--flickr_root", flickr, "--vg_regions", vg, "--output", out, *args.job_args]
    )
    result = {
        "scale": args.scale,
        "images": images,
        "wall_s": run["wall_s"],
        "peak_rss_mb": run["peak_rss_mb"],
        "item_bytes": item_bytes(flickr, vg),
        **summarise(out, images),
    }
    if args.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key:34} {value}")


if __name__ == "__main__":
    main()
