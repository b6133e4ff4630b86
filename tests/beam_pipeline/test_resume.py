"""A job killed while it pays for calls resumes from the cache: the rerun pays only for what did not finish,
and its output is byte for byte what an uninterrupted run writes."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import threading

from comvint.testing import openai_flags, output_bytes
from comvint.testing.fake_openai import FakeOpenAI, schema_json
from tests.conftest import REPO

KILL_AFTER = 60  # requests the first run gets answered before it is killed


def _job(server: FakeOpenAI, output: pathlib.Path, cache: pathlib.Path) -> list[str]:
    flags = openai_flags(server.base_url, "--cache_dir", str(cache), "--output", str(output))
    return [sys.executable, "-m", "beam_pipeline.main", *flags]


def test_a_killed_run_resumes_from_the_cache(tmp_path):
    env = {**os.environ, "OPENAI_API_KEY": "sk-resume"}
    enough = threading.Event()

    def responder(body):
        if len(server.requests) >= KILL_AFTER:
            enough.set()
        return schema_json(body)

    with FakeOpenAI(responder, latency=0.01) as server:
        first = subprocess.Popen(
            _job(server, tmp_path / "killed", tmp_path / "cache"),
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert enough.wait(timeout=300), "the first run never got going"
        first.kill()
        first.wait(timeout=60)
        paid_before_kill = len(server.requests)
        subprocess.run(
            _job(server, tmp_path / "resumed", tmp_path / "cache"), env=env, cwd=REPO, check=True, capture_output=True
        )
        resumed_requests = len(server.requests) - paid_before_kill
        subprocess.run(
            _job(server, tmp_path / "again", tmp_path / "cache"), env=env, cwd=REPO, check=True, capture_output=True
        )
        assert len(server.requests) - paid_before_kill == resumed_requests  # a warm rerun pays nothing
        before_fresh = len(server.requests)
        subprocess.run(
            _job(server, tmp_path / "fresh", tmp_path / "fresh-cache"),
            env=env,
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        fresh_requests = len(server.requests) - before_fresh
    assert first.returncode != 0 and not (tmp_path / "killed" / "instructions").exists()  # killed before writing
    assert 0 < resumed_requests < fresh_requests  # the rerun paid only for what the killed run had not finished
    resumed = output_bytes(tmp_path / "resumed")
    assert resumed and resumed == output_bytes(tmp_path / "again") == output_bytes(tmp_path / "fresh")
