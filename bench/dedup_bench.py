"""Near-duplicate dedup of synthetic instruction records: ComVint's Beam transform vs datasketch's MinHashLSH.

    python bench/dedup_bench.py                       # 250k, 500k and 1M records (about 30 min here)
    python bench/dedup_bench.py --sizes 20000         # a quick look
    python bench/dedup_bench.py --sizes 0 --family 20000   # one family of 20,000 near-identical questions

Each size: generate records (planted near-duplicate clusters across images plus
unique questions), run (a) ``DeduplicateInstructions`` on the local runner,
(b) datasketch's in-memory ``MinHashLSH`` at the same threshold and number of
permutations and (c) the local runner's floor, the same lines through one
Reshuffle and nothing else, each in its own process (wall time, peak RSS of the
process tree), then score (a) and (b) against exact Jaccard similarity on a
sample of records.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import measure, ratio  # noqa: E402
from comvint import dedup  # noqa: E402

TEMPLATES = [
    "What is the {a} {n} next to the {m} used for?",
    "Why might the {n} be {a} in this scene?",
    "How many {n}s are near the {a} {m}?",
    "Is the {a} {n} larger in the picture than the {m}?",
    "What would happen if the {n} fell onto the {m}?",
    "Which season suggests the {a} {n} beside the {m}?",
    "Where is the {n} usually found, given the {a} {m} behind it?",
    "What material is the {a} {n} made of?",
    "Who would most likely use the {n} and the {a} {m} together?",
    "Could the {n} hold the {a} {m} safely?",
    "What is unusual about the {a} {n} on top of the {m}?",
    "Explain how the {n} relates to the {a} {m}.",
]
EDITS = ("in the picture", "shown here", "in this image", "visible", "exactly", "probably")


def vocabulary(seed: int = 7) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    syllables = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"]
    words: set[str] = set()
    while len(words) < 12000:
        words.add("".join(rng.choices(syllables, k=rng.randint(2, 3))))
    ordered = sorted(words)
    rng.shuffle(ordered)
    return ordered[:10000], ordered[10000:]


def fill(rng: random.Random, nouns: list[str], adjs: list[str]) -> str:
    return rng.choice(TEMPLATES).format(a=rng.choice(adjs), n=rng.choice(nouns), m=rng.choice(nouns))


def variant(rng: random.Random, text: str, adjs: list[str]) -> str:
    """A near copy: one or two small edits (an inserted phrase, a changed adjective, punctuation)."""
    words = text.rstrip("?.").split()
    for _ in range(rng.randint(1, 2)):
        kind = rng.random()
        if kind < 0.4:
            words.insert(rng.randrange(1, len(words)), rng.choice(EDITS))
        elif kind < 0.7:
            words[rng.randrange(len(words))] = rng.choice(adjs)
        else:
            words = words[:-1] + [words[-1] + ","]
    return " ".join(words) + "?"


def generate(n: int, path: str, seed: int = 1, planted_share: float = 0.1) -> list[str]:
    """Write ``n`` records; return the ids of the evaluation sample (300 planted clusters + 600 singles)."""
    rng, (nouns, adjs) = random.Random(seed), vocabulary()
    sample, clusters, written = [], 0, 0
    with open(path, "w", encoding="utf-8") as out:
        while written < n:
            if rng.random() < planted_share:
                base, size = fill(rng, nouns, adjs), rng.randint(2, 12)
                texts = [base] + [variant(rng, base, adjs) for _ in range(size - 1)]
                in_sample = clusters < 300
                clusters += 1
            else:
                texts, in_sample = [fill(rng, nouns, adjs)], rng.random() < 600 / (n * 0.5)
            for text in texts[: n - written]:
                image = str(rng.randrange(max(1, n // 3)))  # about 3 items per image, near copies on different images
                rec = {
                    "id": f"r{written:08d}",
                    "image_id": image,
                    "source": "visual_genome",
                    "format": "open_ended",
                    "round": 0,
                    "parent_id": None,
                    "instruction": text,
                    "answer": rng.choice(nouns),
                    "_unit": f"visual_genome/{image}",
                }
                out.write(json.dumps(rec) + "\n")
                if in_sample:
                    sample.append(rec["id"])
                written += 1
    return sample


def generate_family(n: int, path: str, seed: int = 3) -> None:
    """One family of ``n`` near-identical questions (small edits of one text), each on its own image."""
    rng, (nouns, adjs) = random.Random(seed), vocabulary()
    base = fill(rng, nouns, adjs)
    with open(path, "w", encoding="utf-8") as out:
        for k in range(n):
            text = base if k == 0 else variant(rng, base, adjs)
            out.write(
                json.dumps(
                    {
                        "id": f"f{k:08d}",
                        "image_id": str(k),
                        "source": "visual_genome",
                        "format": "open_ended",
                        "round": 0,
                        "parent_id": None,
                        "instruction": text,
                        "answer": "yes",
                        "_unit": f"visual_genome/{k}",
                    }
                )
                + "\n"
            )


def run_ours(path: str, out_dir: str, keep: int, workers: int, waves: int) -> dict:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_pipeline.dedup import DeduplicateInstructions

    mode = ["--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"] if workers else []
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner", *mode])) as p:
        result = (
            p
            | beam.io.ReadFromText(path)
            | beam.Map(json.loads)
            | DeduplicateInstructions(max_per_cluster=keep, waves=waves)
        )
        (
            result.clusters
            | "FormatClusters" >> beam.MapTuple(lambda i, c: f"{i}\t{c}")
            | "WriteClusters" >> beam.io.WriteToText(os.path.join(out_dir, "clusters"))
        )
        (
            result.rejected
            | beam.combiners.Count.Globally()
            | beam.Map(lambda n: json.dumps({"removed": n}))
            | "WriteCount" >> beam.io.WriteToText(os.path.join(out_dir, "removed"), shard_name_template="")
        )
    with open(os.path.join(out_dir, "removed"), encoding="utf-8") as handle:
        return json.loads(handle.read())


def run_floor(path: str, out_dir: str) -> dict:
    """The local runner's own floor: the records' lines through one Reshuffle, counted (no dedup at all)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
        (
            p
            | beam.io.ReadFromText(path)
            | beam.Reshuffle()
            | beam.combiners.Count.Globally()
            | beam.Map(lambda n: json.dumps({"shuffled": n}))
            | beam.io.WriteToText(os.path.join(out_dir, "floor"), shard_name_template="")
        )
    with open(os.path.join(out_dir, "floor"), encoding="utf-8") as handle:
        return json.loads(handle.read())


def run_datasketch(path: str, out_dir: str, sample_path: str) -> dict:
    """The usual single-process recipe: sketch each record, query the index, insert it."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=dedup.THRESHOLD, num_perm=dedup.NUM_PERM)
    sample = set(json.load(open(sample_path)))
    found, with_match = {}, 0
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            rec = json.loads(line)
            m = MinHash(num_perm=dedup.NUM_PERM)
            m.update_batch([s.to_bytes(4, "little") for s in dedup.shingles(rec["instruction"])])
            matches = lsh.query(m)
            with_match += bool(matches)
            if rec["id"] in sample:
                found[rec["id"]] = matches
            lsh.insert(rec["id"], m)
    with open(os.path.join(out_dir, "found.json"), "w") as handle:
        json.dump(found, handle)
    return {"records_with_a_match": with_match}


def evaluate(path: str, sample: list[str], out_dir: str, threshold: float) -> dict:
    """Pairs of the sample: exact Jaccard truth vs LSH candidates (both) and same-cluster (ours)."""
    wanted, recs = set(sample), {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            rec = json.loads(line)
            if rec["id"] in wanted:
                recs[rec["id"]] = rec
    hasher = dedup.MinHasher()
    sh = {i: dedup.shingles(r["instruction"]) for i, r in recs.items()}
    bands = {i: set(hasher.band_keys(hasher.signature(s))) for i, s in sh.items()}
    cluster = {}
    for name in os.listdir(out_dir):
        if name.startswith("clusters"):
            for line in open(os.path.join(out_dir, name), encoding="utf-8"):
                i, c = line.rstrip("\n").split("\t")
                if i in wanted:
                    cluster[i] = c
    found = json.load(open(os.path.join(out_dir, "found.json")))
    truth, ours_cand, ours_cluster, theirs = set(), set(), set(), set()
    for a, b in itertools.combinations(sorted(recs), 2):
        if recs[a]["_unit"] == recs[b]["_unit"]:
            continue
        pair = (a, b)
        if dedup.jaccard(sh[a], sh[b]) >= threshold:
            truth.add(pair)
        if bands[a] & bands[b]:
            ours_cand.add(pair)
        if cluster.get(a) is not None and cluster.get(a) == cluster.get(b):
            ours_cluster.add(pair)
        if a in found.get(b, []) or b in found.get(a, []):
            theirs.add(pair)

    def score(detected: set) -> dict:
        hit = len(truth & detected)
        return {
            "recall": round(hit / len(truth), 4) if truth else None,
            "precision": round(hit / len(detected), 4) if detected else None,
        }

    return {
        "sample_records": len(recs),
        "true_pairs": len(truth),
        "ours_lsh_candidates": score(ours_cand),
        "ours_clusters": score(ours_cluster),
        "datasketch_lsh": score(theirs),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="250000,500000,1000000")
    parser.add_argument("--keep", type=int, default=10)
    parser.add_argument(
        "--workers", type=int, default=0, help="0: in-process runner; N: multi_processing with N workers"
    )
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "comvint-bench-dedup"))
    parser.add_argument(
        "--only", default="ours,datasketch,floor", help="which runs to make (quality needs ours and datasketch)"
    )
    parser.add_argument(
        "--waves",
        type=int,
        default=dedup.BANDS,
        help="LSH band waves (the job's default on the local runner: one band at a time)",
    )
    parser.add_argument(
        "--family", type=int, default=0, help="also time one family of this many near-identical questions"
    )
    parser.add_argument(
        "--role", choices=("main", "ours", "datasketch", "floor"), default="main", help=argparse.SUPPRESS
    )
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "ours":
        print(json.dumps(run_ours(args.input, args.out, args.keep, args.workers, args.waves)))
        return
    if args.role == "floor":
        print(json.dumps(run_floor(args.input, args.out)))
        return
    if args.role == "datasketch":
        print(json.dumps(run_datasketch(args.input, args.out, os.path.join(args.out, "sample.json"))))
        return
    rows, only = [], set(args.only.split(","))
    if args.family:
        work = os.path.join(args.work, f"family{args.family}")
        os.makedirs(work, exist_ok=True)
        path = os.path.join(work, "records.jsonl")
        generate_family(args.family, path)
        run = measure(
            [
                os.path.abspath(__file__),
                "--role",
                "ours",
                "--input",
                path,
                "--out",
                work,
                "--keep",
                str(args.keep),
                "--waves",
                str(args.waves),
            ]
        )
        print(json.dumps({"family": args.family, **run, "kept": args.family - run["removed"]}), flush=True)
    for n in (int(s) for s in args.sizes.split(",") if int(s) > 0):
        work = os.path.join(args.work, str(n))
        os.makedirs(work, exist_ok=True)
        path = os.path.join(work, "records.jsonl")
        sample = generate(n, path)
        json.dump(sample, open(os.path.join(work, "sample.json"), "w"))
        me, row = os.path.abspath(__file__), {"records": n}
        if "ours" in only:
            row["ours"] = measure(
                [
                    me,
                    "--role",
                    "ours",
                    "--input",
                    path,
                    "--out",
                    work,
                    "--keep",
                    str(args.keep),
                    "--workers",
                    str(args.workers),
                    "--waves",
                    str(args.waves),
                ]
            )
        if "datasketch" in only:
            row["datasketch"] = measure([me, "--role", "datasketch", "--input", path, "--out", work])
        if "floor" in only:
            row["runner_floor"] = measure([me, "--role", "floor", "--input", path, "--out", work])
        if "ours" in row and "datasketch" in row:
            row.update(
                wall_ratio=ratio(row["ours"]["wall_s"], row["datasketch"]["wall_s"]),
                memory_ratio=ratio(row["ours"]["peak_rss_mb"], row["datasketch"]["peak_rss_mb"]),
                **evaluate(path, sample, work, dedup.THRESHOLD),
            )
        if "ours" in row and "runner_floor" in row:
            row["memory_vs_runner_floor"] = ratio(row["ours"]["peak_rss_mb"], row["runner_floor"]["peak_rss_mb"])
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(
        json.dumps(
            {"threshold": dedup.THRESHOLD, "num_perm": dedup.NUM_PERM, "bands": dedup.BANDS, "results": rows}, indent=1
        )
    )


if __name__ == "__main__":
    main()
