"""Prompt tokens per call, per stage, on the real annotations: the requests as every stage renders them now,
against the same requests with the annotations rendered the old way (every region line, unmerged).

    python bench/prompt_bench.py [--flickr 500] [--show docs/prompts.md]

Reads Visual Genome images 1-50 (regions and objects) and the first ``--flickr`` images of the real Flickr30k
Entities val split from ``../shared/real_samples``; builds each stage's request for each image (later stages
about the offline engine's own first question of that image), and counts tokens with the o200k_base encoding
of gpt-4o / gpt-4.1 (``bpe-openai``, offline). The demonstration turns are the same on every call of a stage,
so an endpoint's prompt cache bills them once: they are reported apart from the part that varies.
``--show FILE`` also writes every stage's request for one real Visual Genome image and one real Flickr image.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import tarfile

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import bpe_openai  # noqa: E402

from comvint import engine  # noqa: E402
from comvint.prompts.render import render  # noqa: E402
from comvint.readers import flickr30k  # noqa: E402
from comvint.readers import visual_genome as vg  # noqa: E402
from comvint.stages.method import Complicate, MethodConfig, Reformulate, Synthesize, Verify, VerifyReformulated  # noqa: E402

REAL = REPO.parent / "shared" / "real_samples"
STAGES = {"generate": Synthesize, "complicate": Complicate, "verify": Verify, "reformulate": Reformulate}


def unmerged(ann: dict) -> str:
    """The old rendering of Visual Genome: every region line as the file gives it (no size, no merging, no cap)."""
    return "\n".join(
        f"r:{r['region_id']} {r['phrase']} X: {r['box'][0]} Y: {r['box'][1]} Width: {r['box'][2] - r['box'][0]} "
        f"Height: {r['box'][3] - r['box'][1]}"
        for r in ann["regions"]
    )


def vg_records() -> list[dict]:
    root = REAL / "visual_genome_1_50"
    info = vg.parse_image_data((root / "image_data.json").read_text())
    with open(root / "region_descriptions.json", "rb") as handle:
        records = {r["image_id"]: r for r in vg.read_images(handle, "regions", image_data=info) if isinstance(r, dict)}
    parts = []
    for key in vg.SCENE_KEYS:
        with open(root / f"{key}.json", "rb") as handle:
            parts += [p for p in vg.read_images(handle, key, key=key) if isinstance(p, dict)]
    by_image: dict[str, list] = {}
    for part in parts:
        by_image.setdefault(part["image_id"], []).append(part)
    return [vg.attach_scene(r, by_image.get(i, [])) for i, r in records.items()]


def flickr_records(n: int) -> list[dict]:
    tar_path = REAL / "flickr30k_entities_trainval" / "flickr30k_entities_trainval.tar.xz"
    files: dict[str, dict[str, bytes]] = {}
    with tarfile.open(tar_path) as tar:
        for member in tar:
            name = member.name.rsplit("/", 2)
            if len(name) == 3 and name[1] in ("Sentences", "Annotations"):
                files.setdefault(name[2].split(".")[0], {})[name[1]] = tar.extractfile(member).read()
            if len(files) > n + 5 and all(len(v) == 2 for v in list(files.values())[:n]):
                break
    whole = [k for k, v in files.items() if len(v) == 2][:n]
    return [flickr30k.build_record(k, files[k]["Sentences"], files[k]["Annotations"]) for k in whole]


def requests(ann: dict, cfg: MethodConfig) -> dict[str, list[dict]]:
    """Each stage's messages for one image (later stages about the engine's first question of it)."""
    (call,) = Synthesize(cfg).calls(ann, ann)
    items = engine.answer("generate", call.context)["items"]
    out = {"generate": call.messages}
    if items:
        qa = items[0]
        item = {
            "id": "x",
            "family": call.context["family"],
            "round": 0,
            "instruction": qa["instruction"],
            "answer": qa["answer"],
            "grounding": qa["grounding"],
            "format": "open_ended",
        }
        for name in ("complicate", "verify", "reformulate"):
            out[name] = STAGES[name](cfg).calls(item, ann)[0].messages
        closed = engine.answer("reformulate", STAGES["reformulate"](cfg).calls(item, ann)[0].context)
        if closed["bool_positive"]:
            judged = {**item, "format": "bool", "instruction": closed["bool_positive"], "answer": "yes"}
            out["verify_reformulated"] = VerifyReformulated(cfg).calls(judged, ann)[0].messages
    return out


def count(enc, messages: list[dict]) -> tuple[int, int]:
    """(tokens of the fixed prefix: system prompt and demonstration, tokens of the last user turn), 4 per message
    framing."""
    sizes = [len(enc.encode(m["content"])) + 4 for m in messages]
    return sum(sizes[:-1]), sizes[-1]


def show(path: pathlib.Path, anns: list[dict], cfg: MethodConfig) -> None:
    """Every stage's request for each of ``anns`` as Markdown (the demonstration turns named, not repeated)."""
    out = [
        "# What every stage sends, on real annotations",
        "",
        "Written by `python bench/prompt_bench.py --show docs/prompts.md` from `../shared/real_samples` (the offline "
        "engine's "
        "first question of each image is the item of the later stages). Each request is the stage's system prompt, its "
        "demonstration (a user turn and the reply, in `comvint/prompts/demonstrations.py`), then the turn below.",
        "",
    ]
    for ann in anns:
        for stage, messages in requests(ann, cfg).items():
            out += [
                f"## {stage}: {ann['source']} image {ann['image_id']}",
                "",
                "System:",
                "",
                "```text",
                messages[0]["content"],
                "```",
                "",
                "Last user turn:",
                "",
                "```text",
                messages[-1]["content"],
                "```",
                "",
            ]
    path.write_text("\n".join(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flickr", type=int, default=500)
    parser.add_argument(
        "--show", type=pathlib.Path, default=None, help="write every stage's request for one image of each source here"
    )
    args = parser.parse_args()
    enc = bpe_openai.get_encoding("o200k_base")
    cfg = MethodConfig(backend="openai", model="gpt-4o")
    report = {}
    for source, records in (("visual_genome", vg_records()), ("flickr30k_entities", flickr_records(args.flickr))):
        rows: dict[str, dict[str, list[int]]] = {}
        for ann in records:
            # the old last turn: the same, with the annotation text as it was rendered before
            shown = render(ann, cfg.max_regions)
            delta = (len(enc.encode(unmerged(ann))) - len(enc.encode(shown))) if source == "visual_genome" else 0
            for stage, messages in requests(ann, cfg).items():
                prefix, varying = count(enc, messages)
                row = rows.setdefault(stage, {"prefix": [], "now": [], "before": []})
                row["prefix"].append(prefix)
                row["now"].append(varying)
                row["before"].append(varying + delta)
        report[source] = {
            stage: {
                "images": len(r["now"]),
                "fixed_prefix_tokens": round(statistics.mean(r["prefix"])),
                "varying_tokens_before": round(statistics.mean(r["before"])),
                "varying_tokens_now": round(statistics.mean(r["now"])),
                "ratio_now_to_before": round(statistics.mean(r["now"]) / statistics.mean(r["before"]), 3),
            }
            for stage, r in rows.items()
        }
    print(json.dumps(report, indent=1))
    if args.show:
        show(
            args.show,
            [
                next(a for a in vg_records() if a["image_id"] == "1"),
                next(a for a in flickr_records(20) if len(requests(a, cfg)) == 5),
            ],
            cfg,
        )


if __name__ == "__main__":
    main()
