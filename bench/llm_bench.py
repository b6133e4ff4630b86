"""LLM-stage throughput against a fake OpenAI-compatible server with a fixed latency.

    python bench/llm_bench.py                                   # 3000 requests, 200 ms, 64 in flight
    python bench/llm_bench.py --latency 0.1 --curator_python /tmp/curator-venv/bin/python

Reported in one run, each measured in its own process against one fake server
(its own process, so the client's CPU is measured alone):
  * the pipeline stage (``RunStage``: Reshuffle -> RunStageFn) vs the
    ideal ``requests x latency / concurrency``;
  * a naive DoFn making one blocking SDK call per element (on fewer requests: it is slow);
  * Curator (bespokelabs-curator) sending the same requests, when ``--curator_python``
    points at a Python that has it (its tiktoken download is replaced by a local
    4-characters-per-token counter);
  * client CPU seconds per request of each;
  * the same stage again with the warm cache: requests that reached the server.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import measure, ratio  # noqa: E402

SCHEMA = {
    "type": "object",
    "properties": {"echo": {"type": "string"}},
    "required": ["echo"],
    "additionalProperties": False,
}


class EchoStage:
    """A minimal stage: one call per element, the reply is kept as the record."""

    name = "echo"

    def calls(self, item, ann):
        from comvint.llm.runner import Call

        return [Call(str(item), self.name, [{"role": "user", "content": f"request {item}"}], "echo", SCHEMA, "bench-1")]

    def handle(self, item, ann, replies):
        yield "ok", replies[0]["echo"]


def server_stats(base_url: str, reset: bool = False) -> dict:
    """The fake server's counters; ``reset`` starts a new first-request-to-last-reply span."""
    url = base_url.rsplit("/v1", 1)[0] + ("/stats/reset" if reset else "/stats")
    with urllib.request.urlopen(urllib.request.Request(url, method="POST" if reset else "GET")) as response:
        return json.load(response)


def _served(base_url: str, before: int) -> dict:
    """What the server saw of one run: requests, and first-request-to-last-reply seconds."""
    stats = server_stats(base_url)
    return {
        "requests_sent": stats["requests"] - before,
        "request_span_s": stats["span_s"],
        "max_in_flight": stats["max_in_flight"],
    }


def _check_count(outputs, n: int) -> None:
    import apache_beam as beam

    counted = outputs | "Count" >> beam.combiners.Count.Globally()
    counted | "Check" >> beam.Map(lambda c: _check(c, n))


def _check(count: int, n: int) -> None:
    if count != n:
        raise RuntimeError(f"{count} results for {n} requests")


def run_stage(base_url: str, n: int, concurrency: int, cache_dir: str | None) -> dict:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_pipeline.files import write_json
    from beam_pipeline.run_stage import RunStage
    from beam_pipeline.stats import SumUsageFn
    from comvint.llm.config import LLMConfig

    os.environ.setdefault("OPENAI_API_KEY", "bench-key")
    config = LLMConfig(
        backend="openai", base_url=base_url, model="fake", concurrency=concurrency, max_retries=2, cache_dir=cache_dir
    )
    before, cpu0, start = server_stats(base_url, reset=True)["requests"], time.process_time(), time.perf_counter()
    usage_path = os.path.join(tempfile.mkdtemp(), "usage.json")
    with beam.Pipeline(options=PipelineOptions(flags=[], runner="FnApiRunner")) as p:
        result = p | beam.Create(range(n)) | RunStage(EchoStage(), config)
        _check_count(result.ok, n)
        result.usage | beam.CombineGlobally(SumUsageFn()) | beam.Map(lambda u: write_json(usage_path, u))
    usage = json.load(open(usage_path))["echo"]
    return {
        "seconds": round(time.perf_counter() - start, 2),
        "process_cpu_s": round(time.process_time() - cpu0, 2),
        "client_cpu_s": round(usage["client_cpu_ms"] / 1000, 3),
        **_served(base_url, before),
        "cache_hits": usage.get("cache_hits", 0),
        "mean_latency_ms": round(usage.get("latency_ms", 0) / max(1, usage.get("requests", 0)), 1),
    }


class NaiveCallFn:
    """One blocking SDK call per element (what a first DoFn usually looks like)."""

    def __init__(self, base_url: str) -> None:
        self._base_url = base_url

    def setup(self) -> None:
        import openai

        self._client = openai.OpenAI(base_url=self._base_url, api_key="bench-key", max_retries=2)

    def process(self, item):
        reply = self._client.chat.completions.create(
            model="fake", messages=[{"role": "user", "content": f"naive {item}"}]
        )
        yield reply.choices[0].message.content


def run_naive(base_url: str, n: int) -> dict:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    fn = type("NaiveDoFn", (NaiveCallFn, beam.DoFn), {})
    before, cpu0, start = server_stats(base_url, reset=True)["requests"], time.process_time(), time.perf_counter()
    with beam.Pipeline(options=PipelineOptions(flags=[], runner="FnApiRunner")) as p:
        out = p | beam.Create(range(n)) | beam.Reshuffle() | beam.ParDo(fn(base_url))
        _check_count(out, n)
    return {
        "seconds": round(time.perf_counter() - start, 2),
        "process_cpu_s": round(time.process_time() - cpu0, 2),
        **_served(base_url, before),
    }


CURATOR_SCRIPT = r"""
import json, sys, time
import tiktoken
class _Counter:  # local stand-in for the tokenizer tiktoken would download
    name = "local-4-chars"
    def encode(self, text, *a, **k):
        return [0] * max(1, len(text) // 4)
tiktoken.get_encoding = lambda *a, **k: _Counter()
tiktoken.encoding_for_model = lambda *a, **k: _Counter()
from bespokelabs import curator
base_url, n, work = sys.argv[1], int(sys.argv[2]), sys.argv[3]
class Echo(curator.LLM):
    def prompt(self, row):
        return f"curator {row['i']}"
    def parse(self, row, response):
        return {"i": row["i"], "reply": response}
llm = Echo(model_name="gpt-4o-mini", backend="openai",
           backend_params={"base_url": base_url, "api_key": "bench-key", "max_requests_per_minute": 10**7,
                           "max_tokens_per_minute": 10**10, "require_all_responses": False})
cpu0, start = time.process_time(), time.perf_counter()
out = llm([{"i": i} for i in range(n)], working_dir=work)
rows = len(out.dataset) if hasattr(out, "dataset") else len(out)
seconds, cpu_s = round(time.perf_counter() - start, 2), round(time.process_time() - cpu0, 2)
print(json.dumps({"seconds": seconds, "client_cpu_s": cpu_s, "rows": rows}))
"""


def run_curator(python: str, base_url: str, n: int) -> dict:
    before = server_stats(base_url, reset=True)["requests"]
    work = tempfile.mkdtemp(prefix="curator-")
    env = {
        **os.environ,
        "CURATOR_DISABLE_CACHE": "1",
        "CURATOR_DISABLE_RICH_DISPLAY": "1",
        "HF_DATASETS_OFFLINE": "1",
        "CURATOR_VIEWER": "0",
        "OPENAI_API_KEY": "bench-key",
    }
    start = time.perf_counter()
    done = subprocess.run(
        [python, "-c", CURATOR_SCRIPT, base_url, str(n), work], capture_output=True, text=True, env=env, timeout=1800
    )
    wall = time.perf_counter() - start
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    result = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
    return {**result, "process_seconds": round(wall, 2), **_served(base_url, before)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--naive_requests", type=int, default=300)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--curator_python", default=None, help="a Python with bespokelabs-curator installed")
    parser.add_argument("--role", choices=("main", "stage", "naive"), default="main", help=argparse.SUPPRESS)
    parser.add_argument("--base_url", help=argparse.SUPPRESS)
    parser.add_argument("--cache_dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "stage":
        print(json.dumps(run_stage(args.base_url, args.requests, args.concurrency, args.cache_dir)))
        return
    if args.role == "naive":
        print(json.dumps(run_naive(args.base_url, args.naive_requests)))
        return

    server = subprocess.Popen(
        [sys.executable, "-m", "comvint.testing.fake_openai", "--latency", str(args.latency)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        base_url = json.loads(server.stdout.readline())["base_url"]
        me, cache = os.path.abspath(__file__), tempfile.mkdtemp(prefix="llm-bench-cache-")
        common = ["--base_url", base_url, "--requests", str(args.requests), "--concurrency", str(args.concurrency)]
        ideal = args.requests * args.latency / args.concurrency
        stage = measure([me, "--role", "stage", *common, "--cache_dir", cache])
        warm = measure([me, "--role", "stage", *common, "--cache_dir", cache])
        naive = measure([me, "--role", "naive", *common, "--naive_requests", str(args.naive_requests)])
        report = {
            "requests": args.requests,
            "latency_s": args.latency,
            "concurrency": args.concurrency,
            "ideal_s": round(ideal, 2),
            "stage": {
                **stage,
                "share_of_ideal": ratio(ideal, stage["request_span_s"]),
                "req_per_s": round(args.requests / stage["request_span_s"], 1),
                "share_of_ideal_with_startup": ratio(ideal, stage["seconds"]),
                "client_cpu_ms_per_request": round(1000 * stage["client_cpu_s"] / args.requests, 2),
                "process_cpu_ms_per_request": round(1000 * stage["process_cpu_s"] / args.requests, 2),
            },
            "warm_cache": {**warm, "req_per_s_equivalent": round(args.requests / warm["seconds"], 1)},
            "naive_dofn": {
                **naive,
                "req_per_s": round(args.naive_requests / naive["request_span_s"], 1),
                "process_cpu_ms_per_request": round(1000 * naive["process_cpu_s"] / args.naive_requests, 2),
            },
        }
        report["stage_vs_naive_throughput"] = ratio(report["stage"]["req_per_s"], report["naive_dofn"]["req_per_s"])
        if args.curator_python:
            cur = run_curator(args.curator_python, base_url, args.requests)
            if "seconds" in cur:
                cur["req_per_s"] = round(args.requests / cur["request_span_s"], 1)
                cur["client_cpu_ms_per_request"] = round(1000 * cur["client_cpu_s"] / args.requests, 2)
                report["stage_vs_curator_throughput"] = ratio(report["stage"]["req_per_s"], cur["req_per_s"])
            report["curator"] = cur
        report["server"] = server_stats(base_url)
        print(json.dumps(report, indent=1))
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
