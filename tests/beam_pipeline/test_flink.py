"""The whole job on Apache Flink (Beam's Flink job server with its embedded cluster): the same bytes as the
local runner. Skipped without Java or Maven, except in CI."""

from __future__ import annotations

import os
import pathlib
import zipfile

import pytest

from beam_pipeline import flink
from beam_pipeline.main import run
from comvint.llm.config import worker_count
from comvint.testing import output_bytes

OUTPUTS = ("instructions", "rejected", "failures")


def test_the_manifest_folds_long_lines_at_72_bytes(tmp_path):
    jars = [tmp_path / f"a-very-long-dependency-name-{i}-1.2.3.jar" for i in range(40)]
    text = flink.manifest(flink.JOB_SERVER_MAIN, jars)
    assert all(len(line.encode()) <= 72 for line in text.split("\r\n"))
    unfolded = text.replace("\r\n ", "")
    assert f"Main-Class: {flink.JOB_SERVER_MAIN}" in unfolded
    class_path = next(line for line in unfolded.split("\r\n") if line.startswith("Class-Path: "))
    assert class_path.removeprefix("Class-Path: ").split(" ") == [j.resolve().as_uri() for j in jars]
    jar = tmp_path / "server.jar"
    flink.write_manifest_jar(jar, flink.JOB_SERVER_MAIN, jars)
    assert zipfile.ZipFile(jar).read("META-INF/MANIFEST.MF").decode() == text


def test_the_flink_flags_set_the_workers_that_share_the_budget(tmp_path):
    flags = flink.job_flags(tmp_path / "js.jar", "localhost:8081", "localhost:50000", workers=3, parallelism=6)
    assert "--environment_type=EXTERNAL" in flags and "--environment_config=localhost:50000" in flags
    assert "--parallelism=6" in flags
    assert worker_count({"llm_workers": 3}) == 3
    assert worker_count({"llm_workers": 0, "max_num_workers": 5}) == 5


def test_a_missing_java_is_named(monkeypatch):
    monkeypatch.setenv("JAVA_HOME", "/nonexistent")
    with pytest.raises(flink.FlinkError, match="no Java"):
        flink.java()


@pytest.fixture(scope="module")
def job_server() -> pathlib.Path:
    """Beam's Flink job server jar (fetched with Maven into the cache on first use)."""
    try:
        flink.java()
        return flink.fetch_job_server()
    except flink.FlinkError as err:
        if os.environ.get("CI"):
            raise  # .ci/run installs Java and Maven: a missing piece is a failure there
        pytest.skip(f"Flink cannot run here: {err}")


def test_the_job_on_flink_writes_what_the_local_runner_writes(job_server, tmp_path):
    local, on_flink = tmp_path / "local", tmp_path / "flink"
    run(["--output", str(local)])
    # The embedded cluster, Python workers in this process (LOOPBACK): the suite stays within CI's time;
    # bench/flink_bench.py runs a standalone cluster with worker pools.
    run(["--output", str(on_flink), *flink.job_flags(job_server, "[local]", None, workers=1)])
    expected = output_bytes(local, OUTPUTS)
    assert expected and all(expected.values())
    assert output_bytes(on_flink, OUTPUTS) == expected
    assert (on_flink / "report.html").is_file() and (on_flink / "stats.json").is_file()


class FakeProcess:
    """A worker process that runs until its TaskManager hangs up (``exit``)."""

    def __init__(self, command, **_kwargs) -> None:
        self.command, self.code, self.killed = command, None, False

    def poll(self):
        return self.code

    def exit(self) -> None:
        self.code = 0


def test_two_taskmanagers_share_one_pool_without_killing_each_others_workers(monkeypatch):
    from apache_beam.portability.api import beam_fn_api_pb2, endpoints_pb2
    from apache_beam.runners.worker import worker_pool_main

    from beam_pipeline.worker_pool import SharedWorkerPool

    started: list[FakeProcess] = []
    monkeypatch.setattr(
        worker_pool_main.subprocess, "Popen", lambda cmd, **kw: started.append(FakeProcess(cmd)) or started[-1]
    )
    monkeypatch.setattr(worker_pool_main, "kill_process_gracefully", lambda p: setattr(p, "killed", True))
    pool = SharedWorkerPool(use_process=True, state_cache_size=100 << 20)

    def start(endpoint: str) -> None:
        request = beam_fn_api_pb2.StartWorkerRequest(
            worker_id="1-1", control_endpoint=endpoints_pb2.ApiServiceDescriptor(url=endpoint)
        )
        assert not pool.StartWorker(request, None).error

    start("localhost:1111")  # TaskManager 1's first worker
    start("localhost:2222")  # TaskManager 2's first worker: the same id
    assert len(started) == 2 and all("state_cache_size=104857600" in p.command[-1] for p in started)
    pool.StopWorker(beam_fn_api_pb2.StopWorkerRequest(worker_id="1-1"), None)  # TaskManager 1 is done
    assert not any(p.killed for p in started)  # neither worker is killed by id: TaskManager 2's keeps running
    started[0].exit()
    pool.StopWorker(beam_fn_api_pb2.StopWorkerRequest(worker_id="1-1"), None)
    assert list(pool._worker_processes) == ["1-1@localhost:2222"]  # the exited one is forgotten
