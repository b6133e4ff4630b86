"""The whole method against an endpoint with a quota shared by every worker (OpenAI-style limits).

    # 3,000 requests/minute, 200 ms replies; 1 and 2 workers; default flags and --llm_rpm 1500
    python bench/quota_bench.py
    # no quota: the method vs Curator
    python bench/quota_bench.py --unlimited --curator_python /tmp/curator-venv/bin/python

The fake endpoint (``comvint.testing.fake_openai.FakeOpenAI`` with ``quota_rpm``) enforces the quota in one of two
ways (``--quota_kind``, default both, one after the other): ``window``, at most the quota in any 60 s window;
``bucket``, the per-minute limit enforced per second (OpenAI documents that it may be), a token bucket of one
second's worth refilled evenly. It sends ``x-ratelimit-*`` headers, refuses the rest with 429 +
``retry-after-ms``, and answers every request with a schema-valid reply. The job runs in its own
process(es) on generated corpora (``bench/corpora.py``). Reported per run, over its LLM phase
(first to last accepted request of T seconds): the accepted requests as a share of what the quota
allows in that phase (quota x ceil(T / 60)), the share of requests refused, and the busiest 60 s
window (at most the quota, or the job's --llm_rpm budget).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.corpora import generate_flickr, generate_vg  # noqa: E402
from comvint.testing import openai_flags  # noqa: E402
from comvint.testing.fake_openai import FakeOpenAI, schema_json  # noqa: E402


def busiest_minute(times: list[float]) -> int:
    """The most requests accepted in any 60 s window."""
    best, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - 60:
            start += 1
        best = max(best, end - start + 1)
    return best


def run(server: FakeOpenAI, work: str, name: str, extra: list[str]) -> dict:
    before_accepted, before_refused = len(server.accepted), server.refused
    out = os.path.join(work, name)
    cmd = [
        sys.executable,
        "-m",
        "beam_pipeline.main",
        "--flickr_root",
        os.path.join(work, "flickr"),
        "--vg_regions",
        os.path.join(work, "vg.json"),
        "--output",
        out,
        *openai_flags(server.base_url),
        "--llm_max_retries",
        "8",
        *extra,
    ]
    proc = subprocess.run(cmd, env={**os.environ, "OPENAI_API_KEY": "sk-bench"}, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    times = sorted(server.accepted[before_accepted:])
    refused = server.refused - before_refused
    span_min = max(1e-9, (times[-1] - times[0]) / 60) if len(times) > 1 else 1e-9
    stats = json.load(open(os.path.join(out, "stats.json")))
    return {
        "run": name,
        "accepted": len(times),
        "refused": refused,
        "llm_phase_s": round(span_min * 60, 1),
        "accepted_per_min": round(len(times) / span_min),
        # A window lets at most the quota through in any 60 s: in a phase of T seconds, at most quota x ceil(T / 60)
        # requests; a bucket at most its second's worth plus quota x T / 60. The share of that the job used:
        "quota_share": round(len(times) / allowed(server, span_min), 3) if server.quota_rpm else None,
        "refused_share": round(refused / max(1, refused + len(times)), 3),
        "busiest_60s": busiest_minute(times),
        "failures": stats["counts"].get("failures", {}).get("total", 0),
        "kept": stats["counts"]["instructions"]["total"],
    }


def allowed(server: FakeOpenAI, minutes: float) -> float:
    """The most requests the endpoint's quota lets through in a phase of ``minutes``."""
    if server.quota_kind == "bucket":
        return server.quota_rpm / 60 + server.quota_rpm * minutes
    return server.quota_rpm * math.ceil(minutes)


def unlimited(work: str, latency: float, curator_python: str | None) -> None:
    """No quota: the whole method with default flags, and Curator sending as many requests in 7 sequential stages."""
    from bench.llm_bench import run_curator, server_stats

    with FakeOpenAI(schema_json, latency=latency) as server:
        server_stats(server.base_url, reset=True)
        row = run(server, work, "unlimited", [])
        stats = server_stats(server.base_url)
        total = stats["requests"]
        print(
            json.dumps(
                {
                    "run": "ComVint, whole method, default flags",
                    "requests": total,
                    "span_s": stats["span_s"],
                    "requests_per_s": round(total / stats["span_s"], 1),
                    "max_in_flight": stats["max_in_flight"],
                    "kept": row["kept"],
                }
            ),
            flush=True,
        )
        if curator_python:
            seconds, in_flight = 0.0, 0
            for _ in range(7):
                result = run_curator(curator_python, server.base_url, total // 7)
                seconds += result["request_span_s"]
                in_flight = max(in_flight, result["max_in_flight"])
            print(
                json.dumps(
                    {
                        "run": "Curator 0.1.31, 7 sequential stages",
                        "requests": total // 7 * 7,
                        "span_s": round(seconds, 2),
                        "requests_per_s": round(total // 7 * 7 / seconds, 1),
                        "max_in_flight": in_flight,
                    }
                ),
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quota", type=int, default=3000, help="requests per minute the endpoint accepts")
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--flickr", type=int, default=120)
    parser.add_argument("--vg", type=int, default=240)
    parser.add_argument("--work", default=tempfile.mkdtemp(prefix="comvint-quota-"))
    parser.add_argument(
        "--quota_kind", default="window,bucket", help="how the endpoint enforces its quota: window, bucket or both"
    )
    parser.add_argument("--workers", default="1,2", help="worker counts to run with")
    parser.add_argument("--default_flags_only", action="store_true", help="skip the runs with --llm_rpm 1500")
    parser.add_argument("--unlimited", action="store_true", help="no quota: throughput of the method (and of Curator)")
    parser.add_argument("--curator_python", default=None, help="a Python with bespokelabs-curator, for --unlimited")
    args = parser.parse_args()
    if not os.path.exists(os.path.join(args.work, "vg.json")):
        generate_flickr(os.path.join(args.work, "flickr"), args.flickr)
        generate_vg(os.path.join(args.work, "vg.json"), args.vg, regions=(10, 40))
    if args.unlimited:
        unlimited(args.work, args.latency, args.curator_python)
        return
    two = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    runs = [
        ("1 worker, default flags", []),
        ("2 workers, default flags", two),
        ("1 worker, --llm_rpm 1500", ["--llm_rpm", "1500"]),
        ("2 workers, --llm_rpm 1500", [*two, "--llm_rpm", "1500"]),
    ]
    runs = [
        (name, extra)
        for name, extra in runs
        if name.split(" ")[0] in args.workers.split(",") and not (args.default_flags_only and "--llm_rpm" in extra)
    ]
    for kind in args.quota_kind.split(","):
        for k, (name, extra) in enumerate(runs):
            with FakeOpenAI(
                schema_json, latency=args.latency, quota_rpm=args.quota, quota_kind=kind
            ) as server:  # a fresh quota per run
                row = run(server, args.work, f"{kind}{k}", extra)
            print(json.dumps({**row, "run": name, "quota": kind}), flush=True)


if __name__ == "__main__":
    main()
