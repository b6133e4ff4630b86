"""Batch API mode against the fake endpoint: batches, lines and online calls per stage, and the same
run online, for a few hundred generated images.

    # 100 Flickr30k + 300 Visual Genome images, 5% of lines failing once
    python bench/batch_bench.py
    python bench/batch_bench.py --flickr 50 --vg 150 --fail_share 0

The fake (``comvint.testing.fake_openai.FakeOpenAI``) serves the files and batches endpoints: a batch moves one
status per poll and writes its output lines shuffled; ``--fail_share`` of the lines land in the error
file (HTTP 500) on their first attempt, so they go into follow-up batches. Each mode runs in its own
process with its own cache, at ``--llm_prices`` gpt-4o-mini's list price; costs in batch mode carry the
50% discount.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import zlib

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.corpora import generate_flickr, generate_vg  # noqa: E402
from comvint.testing import openai_flags  # noqa: E402
from comvint.testing.fake_openai import FakeOpenAI, schema_json  # noqa: E402

PRICES = "gpt-4o-mini=0.15:0.6"


def run_job(server: FakeOpenAI, work: str, flickr: str, vg: str, mode: str) -> dict:
    out = os.path.join(work, f"out-{mode}")
    before = len(server.requests)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "beam_pipeline.main",
            "--flickr_root",
            flickr,
            "--vg_regions",
            vg,
            "--output",
            out,
            *openai_flags(server.base_url, model="gpt-4o-mini"),
            "--llm_prices",
            PRICES,
            "--cache_dir",
            os.path.join(work, f"cache-{mode}"),
            "--llm_mode",
            mode,
            "--llm_batch_poll_s",
            "0.05",
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "OPENAI_API_KEY": "sk-bench"},
    )
    with open(os.path.join(out, "stats.json"), encoding="utf-8") as handle:
        stats = json.load(handle)
    return {
        "online_calls": len(server.requests) - before,
        "kept": stats["counts"]["instructions"]["total"],
        "failures": stats["counts"].get("failures", {}).get("total", 0),
        "llm": stats["llm"],
    }


def money(value: float) -> str:
    return f"${value:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flickr", type=int, default=100)
    parser.add_argument("--vg", type=int, default=300)
    parser.add_argument(
        "--fail_share", type=float, default=0.05, help="share of batch lines failing on their first attempt"
    )
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="comvint-batch-")
    flickr, vg = os.path.join(work, "flickr"), os.path.join(work, "vg.json")
    generate_flickr(flickr, args.flickr)
    generate_vg(vg, args.vg)

    def faults(body, attempt):
        bucket = zlib.crc32(json.dumps(body["messages"], sort_keys=True).encode()) % 10_000
        return "500" if attempt == 1 and bucket < args.fail_share * 10_000 else None

    with FakeOpenAI(schema_json, batch_faults=faults) as server:
        batch = run_job(server, work, flickr, vg, "batch")
        lines_sent = sum(len(b) for b in server.batch_lines)
    with FakeOpenAI(schema_json) as server:
        online = run_job(server, work, flickr, vg, "online")
    print(
        f"{args.flickr} Flickr30k + {args.vg} Visual Genome images; {args.fail_share:.0%} of batch lines fail once "
        "(HTTP 500)"
    )
    print(
        f"{'stage':22}{'batches':>8}{'lines':>8}{'retried':>8}{'batch cost':>12}"
        f"{'online requests':>16}{'online cost':>12}"
    )
    for stage in sorted(batch["llm"]):
        b, o = batch["llm"][stage], online["llm"].get(stage, {})
        print(
            f"{stage:22}{b.get('batches', 0):>8}{b.get('batch_lines', 0):>8}{sum(b.get('retries', {}).values()):>8}"
            f"{money(b.get('cost', 0)):>12}{o.get('requests', 0):>16}{money(o.get('cost', 0)):>12}"
        )
    total = {k: sum(u.get(k, 0) for u in batch["llm"].values()) for k in ("batches", "batch_lines", "cost")}
    online_cost = sum(u.get("cost", 0) for u in online["llm"].values())
    print(
        f"total: {total['batches']} batches, {total['batch_lines']} lines ({lines_sent} received by the endpoint), "
        f"{batch['online_calls']} online calls in batch mode; kept {batch['kept']} (online run: {online['kept']}); "
        f"cost ${total['cost']:.4f} vs ${online_cost:.4f} online ({total['cost'] / online_cost:.2f}x); failures "
        f"{batch['failures']}"
    )


if __name__ == "__main__":
    main()
