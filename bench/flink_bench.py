"""The job on a standalone Flink cluster (a JobManager and 2 TaskManagers, each its own JVM; Python workers
from Beam's worker pool) beside the local runner, in one run:

    python bench/flink_bench.py                       # every part; the real slice is 1/10 of Flickr30k train+val
    python bench/flink_bench.py --parts identity --fractions 0.1,1

1. identity: the output shards (instructions/, rejected/, failures/) of the bundled sample and of the real
   Flickr30k Entities train+val files (with Visual Genome 1-50), a slice and optionally the whole,
   compared byte for byte with the local runner's; wall time and peak memory of each process (each
   TaskManager JVM, the JobManager, the job server, each Python worker) beside the local runner's.
2. llm: the OpenAI path against the fake endpoint with a quota (3,000 rpm) and --llm_rpm 1500 shared by
   the 2 workers: every input accounted for (the job checks it), the busiest minute within the budget.
3. kill: the same job, a TaskManager SIGKILLed in the middle of the LLM stages (and a new one started, as a
   supervisor would), then again with one Python worker SIGKILLed instead: Flink restarts what failed, the
   output equals the uninterrupted run's, and the endpoint counts requests answered twice; a rerun with
   the killed run's cache pays nothing.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable

import psutil

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from beam_pipeline import flink  # noqa: E402
from bench.quality_bench import REAL, unpack  # noqa: E402
from bench.quota_bench import busiest_minute  # noqa: E402
from comvint.testing import output_bytes  # noqa: E402
from comvint.testing.fake_openai import FakeOpenAI, schema_json  # noqa: E402

OUTPUTS = ("instructions", "rejected", "failures")
FLICKR_IMAGES = 30_783


def shards(output: pathlib.Path) -> dict[str, bytes]:
    """Every record shard of a run, by path under ``output``."""
    return output_bytes(output, OUTPUTS)


def roles(
    submitter: psutil.Process, cluster: flink.LocalCluster | None, pool: flink.WorkerPool | None
) -> dict[str, int]:
    """name -> resident bytes of every process taking part in a run, now."""
    found = {"submitter": [submitter]}
    for proc in submitter.children(recursive=True):
        found.setdefault("job server" if "java" in proc.name() else "local workers", []).append(proc)
    if cluster:
        found.update({name: [psutil.Process(pid)] for name, pid in cluster.pids().items()})
    if pool and pool.proc:
        for i, child in enumerate(psutil.Process(pool.proc.pid).children(recursive=True)):
            found[f"python worker {i + 1}"] = [child]
    rss = {}
    for name, procs in found.items():
        try:
            rss[name] = sum(p.memory_info().rss for p in procs)
        except psutil.Error:
            pass
    return rss


@dataclasses.dataclass
class Flink:
    """Where a job runs on Flink: the job server's jar, the cluster and its worker pool."""

    jar: pathlib.Path
    cluster: flink.LocalCluster
    pool: flink.WorkerPool

    def flags(self) -> list[str]:
        live = len(self.cluster.pids()) - 1  # TaskManagers
        return flink.job_flags(self.jar, self.cluster.address, self.pool.address, live, live)


def run(
    args: list[str],
    on: Flink | None = None,
    env: dict[str, str] | None = None,
    on_kill: Callable[[], None] | None = None,
    kill: threading.Event | None = None,
) -> dict:
    """Run the job (locally, or ``on`` Flink): wall seconds and peak MB per process; ``on_kill()`` when
    ``kill`` is set."""
    cluster, pool = (on.cluster, on.pool) if on else (None, None)
    flags = on.flags() if on else []
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "beam_pipeline.main", *args, *flags],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    submitter, peaks = psutil.Process(proc.pid), collections.Counter()
    while proc.poll() is None:
        for name, rss in roles(submitter, cluster, pool).items():
            peaks[name] = max(peaks[name], rss)
        if kill is not None and kill.is_set():
            kill.clear()
            on_kill()
        time.sleep(0.5)
    out = proc.stdout.read()
    if proc.returncode:
        raise SystemExit(f"job failed ({proc.returncode}):\n{out[-3000:]}")
    return {
        "wall_s": round(time.monotonic() - start, 1),
        "peak_mb": {name: round(rss / 2**20) for name, rss in sorted(peaks.items())},
    }


def identity(work: pathlib.Path, on: Flink, fractions: list[float]) -> list[dict]:
    """Part 1: the sample and real slices, local vs Flink, byte for byte."""
    rows = []
    flickr = unpack(work)
    vg = REAL / "visual_genome_1_50"
    real = [
        "--flickr_root",
        str(flickr),
        "--vg_regions",
        str(vg / "region_descriptions.json"),
        "--vg_image_data",
        str(vg / "image_data.json"),
    ]
    cases = [("bundled sample", [])] if 0 in fractions else []
    cases += [
        (
            f"Flickr30k train+val x{f:g} + VG 1-50",
            [*real, *(["--limit", str(round(FLICKR_IMAGES * f))] if f < 1 else [])],
        )
        for f in fractions
        if f
    ]
    for name, args in cases:
        local, on_flink = work / f"local-{len(rows)}", work / f"flink-{len(rows)}"
        measured_local = run([*args, "--output", str(local)])
        measured_flink = run([*args, "--output", str(on_flink)], on)
        a, b = shards(local), shards(on_flink)
        rows.append(
            {
                "case": name,
                "shards": len(a),
                "bytes": sum(map(len, a.values())),
                "identical": a == b,
                "local": measured_local,
                "flink": measured_flink,
                "wall_ratio_flink_to_local": round(measured_flink["wall_s"] / measured_local["wall_s"], 2),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def llm_and_kill(work: pathlib.Path, on: Flink) -> dict:
    """Parts 2 and 3: the OpenAI path with a quota, uninterrupted, then with a TaskManager killed, then
    with a Python worker killed."""
    env = {**os.environ, "OPENAI_API_KEY": "sk-flink-bench"}
    kill_now, answered = threading.Event(), collections.Counter()
    state, killed = {"kill_at": 0}, []

    def kill_a_taskmanager() -> None:
        """SIGKILL the first TaskManager and start a replacement (a supervisor's restart)."""
        killed.append({"taskmanager_pid": on.cluster.kill_taskmanager(0), "at": time.strftime("%H:%M:%S")})
        on.cluster.add_taskmanager()

    def kill_a_python_worker() -> None:
        """SIGKILL one SDK worker process of the pool (Flink must restart the tasks it served)."""
        worker = psutil.Process(on.pool.proc.pid).children()[0]
        worker.kill()
        killed.append({"python_worker_pid": worker.pid, "at": time.strftime("%H:%M:%S")})

    def responder(body):
        key = json.dumps(body.get("messages"), sort_keys=True)
        answered[key] += 1
        if state["kill_at"] and sum(answered.values()) == state["kill_at"]:
            kill_now.set()
        return schema_json(body)

    def job(output: pathlib.Path, cache: pathlib.Path) -> list[str]:
        return [
            "--llm",
            "openai",
            "--llm_base_url",
            server.base_url,
            "--llm_model",
            "fake",
            "--llm_rpm",
            "1500",
            "--llm_max_retries",
            "8",
            "--cache_dir",
            str(cache),
            "--output",
            str(output),
        ]

    result = {}
    with FakeOpenAI(responder, latency=0.05, quota_rpm=3000) as server:
        whole = run(job(work / "llm-whole", work / "cache-whole"), on, env)
        sent = sum(answered.values())
        result["uninterrupted"] = {
            **whole,
            "answered": sent,
            "refused_429": server.refused,
            "busiest_minute": busiest_minute(server.accepted),
        }
        for name, kill in (("taskmanager_killed", kill_a_taskmanager), ("python_worker_killed", kill_a_python_worker)):
            answered.clear()
            killed.clear()
            state["kill_at"], refused_before = sent // 2, server.refused
            measured = run(job(work / name, work / f"cache-{name}"), on, env, kill, kill_now)
            twice = sum(n - 1 for n in answered.values() if n > 1)
            result[name] = {
                **measured,
                "killed": list(killed),
                "answered": sum(answered.values()),
                "answered_twice": twice,
                "refused_429": server.refused - refused_before,
                "identical_to_uninterrupted": shards(work / name) == shards(work / "llm-whole"),
            }
        answered.clear()
        state["kill_at"] = 0
        rerun = run(job(work / "llm-rerun", work / "cache-taskmanager_killed"), on, env)
        result["rerun_same_cache"] = {
            **rerun,
            "answered": sum(answered.values()),
            "identical": shards(work / "llm-rerun") == shards(work / "llm-whole"),
        }
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="identity,llm", help="identity, llm (llm includes the kill)")
    parser.add_argument(
        "--fractions",
        default="0,0.1",
        help="slices of the real Flickr30k train+val (0: the bundled sample instead, 1: the whole)",
    )
    parser.add_argument("--work", type=pathlib.Path, default=pathlib.Path(tempfile.mkdtemp(prefix="comvint-flink-")))
    parser.add_argument("--json", type=pathlib.Path, default=REPO / "build" / "flink_bench.json")
    opts = parser.parse_args()
    jar, home = flink.fetch_job_server(), flink.fetch_flink()
    os.environ["OPENAI_API_KEY"] = "sk-flink-bench"  # the workers (the pool's children) read the key, not the submitter
    parts = opts.parts.split(",")
    report = {
        "versions": {
            "beam_python": __import__("apache_beam").__version__,
            "beam_java_job_server": flink.BEAM_JAVA_VERSION,
            "flink": flink.FLINK_VERSION,
        },
        "cluster": "1 JobManager + 2 TaskManagers x 2 slots, EXTERNAL worker pool",
    }
    with flink.LocalCluster(home, opts.work / "logs", 2, 2) as cluster, flink.WorkerPool(opts.work / "logs") as pool:
        on = Flink(jar, cluster, pool)
        if "identity" in parts:
            report["identity"] = identity(opts.work, on, [float(f) for f in opts.fractions.split(",")])
        if "llm" in parts:
            report["llm"] = llm_and_kill(opts.work, on)
    opts.json.parent.mkdir(parents=True, exist_ok=True)
    opts.json.write_text(json.dumps(report, indent=1))
    print(f"wrote {opts.json}")


if __name__ == "__main__":
    main()
