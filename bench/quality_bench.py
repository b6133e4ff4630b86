"""The offline job on real annotations at real size, judged by the tests' independent checker.

Runs ``beam_pipeline.main`` with default flags on every Flickr30k Entities image of the real train+val
release (unpacked from ``../shared/real_samples``) and the real Visual Genome files, on the local
runner, in a child process whose tree's peak memory is sampled; then reads every kept item and
reports: wall time, peak memory, kept per usable image per family, formats, rounds, the kinds of
question (what it finally asks), median words per round, the share of items per defect kind
(``tests/checker.py``), and random kept items per format.

    python bench/quality_bench.py [--split val] [--out build/quality] [--examples 20]
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import pathlib
import random
import re
import statistics
import subprocess
import sys
import tarfile
import time

import psutil

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests import checker  # noqa: E402

REAL = REPO.parent / "shared" / "real_samples"
KINDS = {
    "left_of": "position",
    "right_of": "position",
    "above": "position",
    "below": "position",
    "larger": "size",
    "smaller": "size",
    "count": "count",
    "rel": "relation",
    "colour": "colour",
    "material": "material",
    "kind": "kind",
}


def unpack(out: pathlib.Path) -> pathlib.Path:
    root = out / "flickr30k_entities"
    if not (root / "Annotations").is_dir():
        with tarfile.open(REAL / "flickr30k_entities_trainval" / "flickr30k_entities_trainval.tar.xz") as tar:
            tar.extractall(out, filter="data")
    return root


def run_job(args: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MB of the process tree) of one job run."""
    start, peak = time.monotonic(), 0
    proc = subprocess.Popen([sys.executable, "-m", "beam_pipeline.main", *args], cwd=REPO, stdout=subprocess.DEVNULL)
    parent = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            rss = sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)])
        except psutil.Error:
            rss = 0
        peak = max(peak, rss)
        time.sleep(0.2)
    if proc.returncode:
        raise SystemExit(f"job failed with exit code {proc.returncode}")
    return time.monotonic() - start, peak / 2**20


def kind_of(item: dict) -> str:
    clauses = [c for c in item["grounding"] if not c.startswith("not ")]
    ask = [c for c in clauses if c.startswith(("colour(", "material(", "kind("))]
    rel = re.match(r"(\w+)\(", (ask or clauses)[-1] if (ask or clauses) else "")
    return KINDS.get(rel.group(1), "other") if rel else "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="", help="a Flickr split (train, val); default every image of the release")
    parser.add_argument("--out", default=str(REPO / "build" / "quality"))
    parser.add_argument("--examples", type=int, default=20, help="random kept items printed per format")
    opts = parser.parse_args()
    out = pathlib.Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    flickr = unpack(out)
    vg = REAL / "visual_genome_1_50"
    args = [
        "--flickr_root",
        str(flickr),
        "--vg_regions",
        str(vg / "region_descriptions.json"),
        "--vg_image_data",
        str(vg / "image_data.json"),
        "--output",
        str(out / "run"),
    ]
    if opts.split:
        args += ["--flickr_split", opts.split]
    wall, peak = run_job(args)
    items = [
        json.loads(line) for p in sorted(glob.glob(str(out / "run" / "instructions" / "*.jsonl"))) for line in open(p)
    ]
    rejected = [
        json.loads(line) for p in sorted(glob.glob(str(out / "run" / "rejected" / "*.jsonl"))) for line in open(p)
    ]
    filtered = collections.Counter(r["source"] for r in rejected if r.get("stage") == "filter")
    stats = json.loads((out / "run" / "stats.json").read_text())
    genome = checker.load_genome(vg)
    defects: collections.Counter = collections.Counter()
    flagged = 0
    for item in items:
        image = (
            checker.load_flickr(flickr, item["image_id"])
            if item["source"] == "flickr30k_entities"
            else genome[item["image_id"]]
        )
        found = checker.flags(item, image)
        flagged += bool(found)
        defects.update(found)
    inputs = collections.Counter()
    inputs["flickr30k_entities"] = (
        len(list((flickr / "Annotations").glob("*.xml")))
        if not opts.split
        else len((flickr / f"{opts.split}.txt").read_text().split())
    )
    inputs["visual_genome"] = len(genome)
    n = len(items)
    kinds = collections.Counter(kind_of(i) for i in items)
    words = collections.defaultdict(list)
    for i in items:
        words[i["round"]].append(len(i["instruction"].split()))
    report = {
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(peak),
        "kept": n,
        "flagged": flagged,
        "flagged_share": round(flagged / max(n, 1), 4),
        "defects": dict(defects),
        "kept_per_usable_image": {
            src: round(sum(i["source"] == src for i in items) / max(inputs[src] - filtered[src], 1), 2)
            for src in inputs
        },
        "filtered": dict(filtered),
        "inputs": dict(inputs),
        "formats": dict(collections.Counter(i["format"] for i in items)),
        "rounds": dict(collections.Counter(i["round"] for i in items)),
        "kinds": {k: round(v / n, 3) for k, v in kinds.most_common()},
        "median_words_per_round": {r: statistics.median(w) for r, w in sorted(words.items())},
        "accounting_holds": stats["accounting"]["identity_holds"],
    }
    print(json.dumps(report, indent=1))
    rng = random.Random(0)
    for fmt in ("open_ended", "bool", "multiple_choice"):
        pool = [i for i in items if i["format"] == fmt]
        print(f"\n## {fmt}")
        for i in rng.sample(pool, min(opts.examples, len(pool))):
            options = f" [{' / '.join(i['options'])}]" if i.get("options") else ""
            print(f"- ({i['source']} {i['image_id']}, round {i['round']}) {i['instruction']}{options} -> {i['answer']}")
    (out / "report.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
