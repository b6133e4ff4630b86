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
   supervisor would), then again with every Python worker SIGKILLed instead: Flink restarts what failed, the
   output equals the uninterrupted run's; the endpoint counts requests answered twice, beside how many were
   in flight at the kill (answered, not yet in the cache); a rerun with the killed run's cache pays nothing.
4. budget: --llm_rpm 120 against an endpoint that refuses past 120 requests a minute: the 2 workers' shares
   keep the busiest minute within it, with no 429.
5. batch: --llm_mode batch on Flink beside the local runner (the same bytes), then a lost machine (a
   TaskManager and every Python worker SIGKILLed) with the first batch in flight: the restarted job resumes
   it from the ledger and submits no line twice, and the output equals the uninterrupted run's.
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
from comvint.testing import cache_entries, openai_flags, output_bytes  # noqa: E402
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


def kill_python_workers(pool: flink.WorkerPool) -> list[int]:
    """SIGKILL every SDK worker process of the pool (whatever task each was in the middle of); their pids."""
    workers = psutil.Process(pool.proc.pid).children(recursive=True)
    for worker in workers:
        worker.kill()
    psutil.wait_procs(workers, timeout=30)
    return [w.pid for w in workers]


def llm_and_kill(work: pathlib.Path, on: Flink) -> dict:
    """Parts 2 and 3: the OpenAI path with a quota, uninterrupted, then with a TaskManager killed, then
    with every Python worker killed; each kill lands at the middle request of the uninterrupted run."""
    env = {**os.environ, "OPENAI_API_KEY": "sk-flink-bench"}
    kill_now, answered = threading.Event(), collections.Counter()
    state: dict = {"kill_at": 0, "cache": None}
    killed: list[dict] = []

    def after_the_kill(what: dict) -> None:
        """What the endpoint had answered and the cache held once the kill landed: the difference was in
        flight (answered to a worker that died before caching it), the most a restart can pay twice."""
        distinct, cached = len(answered), cache_entries(state["cache"])
        killed.append({**what, "at": time.strftime("%H:%M:%S"), "answered": distinct, "cached": cached})

    def kill_a_taskmanager() -> None:
        """SIGKILL a TaskManager and start a replacement (a supervisor's restart)."""
        after_the_kill({"taskmanager_pid": on.cluster.kill_taskmanager()})
        on.cluster.add_taskmanager()

    def kill_every_python_worker() -> None:
        """SIGKILL every SDK worker process of the pool: the task in the middle of a request fails."""
        after_the_kill({"python_worker_pids": kill_python_workers(on.pool)})

    def responder(body):
        key = json.dumps(body.get("messages"), sort_keys=True)
        answered[key] += 1
        if state["kill_at"] and sum(answered.values()) == state["kill_at"]:
            kill_now.set()
        return schema_json(body)

    def job(name: str, cache: str) -> list[str]:
        state["cache"] = work / f"cache-{cache}"
        flags = ["--llm_rpm", "1500", "--llm_max_retries", "8", "--cache_dir", str(state["cache"])]
        return [*openai_flags(server.base_url, *flags), "--output", str(work / name)]

    result = {}
    with FakeOpenAI(responder, latency=0.05, quota_rpm=3000) as server:
        whole = run(job("llm-whole", "whole"), on, env)
        sent = sum(answered.values())
        result["uninterrupted"] = {
            **whole,
            "answered": sent,
            "refused_429": server.refused,
            "busiest_minute": busiest_minute(server.accepted),
        }
        kills = (("taskmanager_killed", kill_a_taskmanager), ("every_python_worker_killed", kill_every_python_worker))
        for name, kill in kills:
            answered.clear()
            killed.clear()
            state["kill_at"], refused_before = sent // 2, server.refused
            measured = run(job(name, name), on, env, kill, kill_now)
            result[name] = {
                **measured,
                "killed": list(killed),
                "in_flight_at_the_kill": sum(k["answered"] - k["cached"] for k in killed),
                "answered": sum(answered.values()),
                "answered_twice": sum(n - 1 for n in answered.values() if n > 1),
                "refused_429": server.refused - refused_before,
                "identical_to_uninterrupted": shards(work / name) == shards(work / "llm-whole"),
            }
        answered.clear()
        state["kill_at"] = 0
        rerun = run(job("llm-rerun", "taskmanager_killed"), on, env)
        result["rerun_same_cache"] = {
            **rerun,
            "answered": sum(answered.values()),
            "identical": shards(work / "llm-rerun") == shards(work / "llm-whole"),
        }
    print(json.dumps(result), flush=True)
    return result


def budget(work: pathlib.Path, on: Flink, rpm: int = 120) -> dict:
    """Part 4: a budget that binds. The endpoint refuses past ``rpm`` requests in any minute, the job gets
    ``--llm_rpm rpm`` to split between its workers: at most ``rpm`` in the busiest minute, and no 429."""
    env = {**os.environ, "OPENAI_API_KEY": "sk-flink-bench"}
    with FakeOpenAI(schema_json, latency=0.05, quota_rpm=rpm) as server:
        flags = ["--llm_rpm", str(rpm), "--llm_max_retries", "8", "--output", str(work / "budget")]
        measured = run(openai_flags(server.base_url, *flags), on, env)
        result = {
            **measured,
            "llm_rpm": rpm,
            "answered": len(server.accepted),
            "refused_429": server.refused,
            "busiest_minute": busiest_minute(server.accepted),
            "identical_to_the_llm_part": (
                shards(work / "budget") == shards(work / "llm-whole") if (work / "llm-whole").is_dir() else None
            ),
        }
    print(json.dumps(result), flush=True)
    return result


def batch_and_kill(work: pathlib.Path, on: Flink) -> dict:
    """Part 5: ``--llm_mode batch`` on Flink, beside the local runner; then a lost machine (a TaskManager and
    every Python worker SIGKILLed) while the first batch is in flight: the restarted job resumes that batch
    from the ledger, submits no line twice, and writes what the uninterrupted run wrote."""
    env = {**os.environ, "OPENAI_API_KEY": "sk-flink-bench"}
    hold, kill_now, killed = threading.Event(), threading.Event(), []

    def lose_a_machine() -> None:
        killed.append(
            {
                "taskmanager_pid": on.cluster.kill_taskmanager(),
                "python_worker_pids": kill_python_workers(on.pool),
                "at": time.strftime("%H:%M:%S"),
                "batches_created": len(server.batch_lines),
            }
        )
        on.cluster.add_taskmanager()
        hold.set()  # the endpoint finishes the batch; only the restarted job is left to collect it

    def job(name: str) -> list[str]:
        flags = ["--llm_mode", "batch", "--llm_batch_poll_s", "1", "--cache_dir", str(work / f"cache-{name}")]
        return [*openai_flags(server.base_url, *flags), "--output", str(work / name)]

    def lines_since(mark: int) -> list[str]:
        return [cid for lines in server.batch_lines[mark:] for cid in lines]

    result = {}
    with FakeOpenAI(schema_json, batch_hold=hold) as server:
        hold.set()
        result["local"] = run(job("batch-local"), None, env)
        mark = len(server.batch_lines)
        measured = run(job("batch-flink"), on, env)
        lines = lines_since(mark)
        result["flink"] = {
            **measured,
            "batches": len(server.batch_lines) - mark,
            "lines": len(lines),
            "identical_to_local": shards(work / "batch-flink") == shards(work / "batch-local"),
        }
        hold.clear()
        server.batch_polled.clear()
        mark = len(server.batch_lines)
        threading.Thread(target=lambda: server.batch_polled.wait() and kill_now.set(), daemon=True).start()
        measured = run(job("batch-killed"), on, env, lose_a_machine, kill_now)
        lines = lines_since(mark)
        stats = json.loads((work / "batch-killed" / "stats.json").read_text())
        result["machine_lost_mid_batch"] = {
            **measured,
            "killed": killed,
            "batches": len(server.batch_lines) - mark,
            "batches_resumed": sum(s.get("batches_resumed", 0) for s in stats["llm"].values()),
            "lines": len(lines),
            "lines_submitted_twice": len(lines) - len(set(lines)),
            "online_requests": len(server.requests),
            "identical_to_uninterrupted": shards(work / "batch-killed") == shards(work / "batch-flink"),
        }
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--parts",
        default="identity,llm,budget,batch",
        help="identity, llm (with the kills), budget (needs llm's output), batch (with a lost machine)",
    )
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
        if "budget" in parts:
            report["budget"] = budget(opts.work, on)
        if "batch" in parts:
            report["batch"] = batch_and_kill(opts.work, on)
    opts.json.parent.mkdir(parents=True, exist_ok=True)
    opts.json.write_text(json.dumps(report, indent=1))
    print(f"wrote {opts.json}")


if __name__ == "__main__":
    main()
