"""Does ``python -m beam_pipeline.estimate`` predict what a run then sends? On real annotations, against the fake
endpoint standing in for a model:

    python bench/estimate_bench.py [--images 300] [--estimate_images 100]

Two disjoint slices of real data, A and B: each ``--images`` Flickr30k Entities train+val images (seeded) and
half of Visual Genome images 1-50. The fake endpoint answers like a model with a seeded character: 3 items per
image, its judge says no to about 1 item in 5, about 1 complication in 7 comes back empty. It counts every
request it receives and the request's prompt tokens (o200k_base, with OpenAI's message framing).

1. run the job on A (the fake's figures for A; A's ``stats.json``);
2. estimate B from a sample of ``--estimate_images`` of its images per source, twice: with the stated default
   rates, and with the rates measured on A (``--estimate_from``);
3. run the job on B and compare: the expected requests and prompt tokens against what B sent.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import random
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from beam_pipeline.estimate import tokenizer  # noqa: E402
from bench.quality_bench import REAL, unpack  # noqa: E402
from comvint.testing import ModelLikeFake  # noqa: E402
from comvint.testing.fake_openai import FakeOpenAI  # noqa: E402

VG_FILES = ("region_descriptions", "objects", "attributes", "relationships", "image_data")


def flickr_split(root: pathlib.Path, n: int, seed: int) -> tuple[list[str], list[str]]:
    ids = sorted(p.stem for p in (root / "Annotations").glob("*.xml"))
    random.Random(seed).shuffle(ids)
    return ids[:n], ids[n : 2 * n]


def vg_slice(out: pathlib.Path, ids: set[int]) -> pathlib.Path:
    """Visual Genome 1-50's five files, only the images ``ids``."""
    out.mkdir(parents=True, exist_ok=True)
    for name in VG_FILES:
        rows = json.loads((REAL / "visual_genome_1_50" / f"{name}.json").read_text())
        (out / f"{name}.json").write_text(json.dumps([r for r in rows if r.get("image_id", r.get("id")) in ids]))
    return out


def job_flags(flickr: pathlib.Path, split: pathlib.Path, vg: pathlib.Path) -> list[str]:
    return [
        "--flickr_root",
        str(flickr),
        "--flickr_split",
        str(split),
        "--vg_regions",
        str(vg / "region_descriptions.json"),
        "--vg_image_data",
        str(vg / "image_data.json"),
        "--llm_model",
        "gpt-4o-mini",
    ]


def run_job(server: FakeOpenAI, fake: ModelLikeFake, flags: list[str], output: pathlib.Path) -> dict:
    before = (fake.requests, fake.prompt_tokens)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "beam_pipeline.main",
            *flags,
            "--llm",
            "openai",
            "--llm_base_url",
            server.base_url,
            "--output",
            str(output),
        ],
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
        env={**__import__("os").environ, "OPENAI_API_KEY": "sk-estimate-bench"},
    )
    return {"requests": fake.requests - before[0], "prompt_tokens": fake.prompt_tokens - before[1]}


def estimate_of(flags: list[str], images: int, earlier: pathlib.Path | None) -> dict:
    extra = ["--estimate_from", str(earlier)] if earlier else []
    out = subprocess.run(
        [sys.executable, "-m", "beam_pipeline.estimate", *flags, "--estimate_images", str(images), *extra, "--json"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300, help="Flickr30k images per slice")
    parser.add_argument("--estimate_images", type=int, default=100, help="images per source the estimate samples")
    parser.add_argument("--work", type=pathlib.Path, default=pathlib.Path(tempfile.mkdtemp(prefix="comvint-estimate-")))
    parser.add_argument("--json", type=pathlib.Path, default=REPO / "build" / "estimate_bench.json")
    args = parser.parse_args()
    flickr = unpack(args.work)
    a_ids, b_ids = flickr_split(flickr, args.images, 0)
    slices = {}
    for name, ids, vg_ids in (("A", a_ids, set(range(1, 26))), ("B", b_ids, set(range(26, 51)))):
        split = args.work / f"split-{name}.txt"
        split.write_text("\n".join(ids) + "\n")
        slices[name] = job_flags(flickr, split, vg_slice(args.work / f"vg-{name}", vg_ids))
    count, _ = tokenizer("gpt-4o-mini")
    fake = ModelLikeFake(count)
    report: dict = {"slices": {"flickr_images": args.images, "vg_images": 25}, "estimate_images": args.estimate_images}
    with FakeOpenAI(fake) as server:
        report["A_sent"] = run_job(server, fake, slices["A"], args.work / "out-A")
        report["B_estimate_defaults"] = estimate_of(slices["B"], args.estimate_images, None)
        report["B_estimate_from_A"] = estimate_of(slices["B"], args.estimate_images, args.work / "out-A")
        sent_before = fake.requests
        report["B_sent"] = run_job(server, fake, slices["B"], args.work / "out-B")
        assert fake.requests - sent_before == report["B_sent"]["requests"]
    for case in ("B_estimate_defaults", "B_estimate_from_A"):
        report[f"{case}_error"] = {
            key: round((report[case][key]["expected"] - report["B_sent"][key]) / report["B_sent"][key], 3)
            for key in ("requests", "prompt_tokens")
        }
        report[f"{case}_range_holds_sent"] = {
            key: report[case][key]["low"] <= report["B_sent"][key] <= report[case][key]["high"]
            for key in ("requests", "prompt_tokens")
        }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    summary = {k: v for k, v in report.items() if k.endswith(("_error", "_holds_sent", "_sent")) or k == "slices"}
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
