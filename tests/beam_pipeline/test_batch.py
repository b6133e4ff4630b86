"""Batch API mode through the whole job: a run killed with a batch in flight resumes it, failing lines are
retried or dead-lettered with every image accounted for, the cost cap, the cancel command, refused settings."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import threading
import zlib

import pytest

from beam_pipeline import main
from comvint.testing import openai_flags, output_bytes
from comvint.testing.fake_openai import FakeOpenAI, schema_json
from tests.beam_pipeline.helpers import read_jsonl, read_stats
from tests.conftest import REPO

ENV = {**os.environ, "OPENAI_API_KEY": "sk-batch-secret"}


def _job(server: FakeOpenAI, output: pathlib.Path, cache: pathlib.Path, *extra: str) -> list[str]:
    batch = ["--llm_mode", "batch", "--llm_batch_poll_s", "0.01", "--cache_dir", str(cache), "--output", str(output)]
    return openai_flags(server.base_url, *batch, *extra)


def _command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "beam_pipeline.main", *args]


def test_a_run_killed_with_a_batch_in_flight_resumes_it_and_submits_no_line_twice(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-batch-secret")
    hold = threading.Event()
    with FakeOpenAI(schema_json, batch_hold=hold) as server:
        first = subprocess.Popen(
            _command(_job(server, tmp_path / "killed", tmp_path / "cache")),
            env=ENV,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert server.batch_polled.wait(timeout=300), "the first run never submitted a batch"
        first.kill()
        first.wait(timeout=60)
        in_flight = [list(b) for b in server.batch_lines]
        hold.set()
        subprocess.run(
            _command(_job(server, tmp_path / "resumed", tmp_path / "cache")),
            env=ENV,
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        lines = [cid for b in server.batch_lines for cid in b]
        assert not server.requests  # never an online call
    assert len(in_flight) == 1 and lines[: len(in_flight[0])] == in_flight[0]
    assert len(lines) == len(set(lines))  # no line submitted twice
    resumed = read_stats(str(tmp_path / "resumed"))["llm"]
    assert resumed["generate"].get("batches_resumed") == 1 and "batches" not in resumed["generate"]
    with FakeOpenAI(schema_json) as server:
        main.run(_job(server, tmp_path / "uninterrupted", tmp_path / "fresh-cache"))
    assert first.returncode != 0 and not (tmp_path / "killed" / "instructions").exists()
    assert output_bytes(tmp_path / "resumed") == output_bytes(tmp_path / "uninterrupted") != {}


def _bucket(body: dict) -> int:
    return zlib.crc32(json.dumps(body["messages"], sort_keys=True).encode()) % 100


def test_with_5_percent_of_lines_failing_every_image_is_accounted_for(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-batch-secret")

    def faults(body, attempt):
        if _bucket(body) < 4 and attempt == 1:
            return "500"  # fails once: retried in the next batch
        if _bucket(body) == 4:
            return "500"  # fails every time: dead-lettered after the retries
        return None

    with FakeOpenAI(schema_json, batch_faults=faults) as server:
        main.run(_job(server, tmp_path / "out", tmp_path / "cache", "--llm_max_retries", "2"))
        lines = [cid for b in server.batch_lines for cid in b]
        attempts = dict(server.line_attempts)
    stats, failures = read_stats(str(tmp_path / "out")), read_jsonl(str(tmp_path / "out"), "failures")
    assert stats["accounting"]["identity_holds"] and stats["accounting"]["items"]["identity_holds"]
    retried = [cid for cid, n in attempts.items() if n > 1]
    assert 0.03 * len(set(lines)) < len(retried) < 0.12 * len(set(lines))  # about 5% of lines failed at least once
    exhausted = [f for f in failures if f["reason"].endswith("_exhausted_retries")]
    assert exhausted and all("batch_http_500" in f["detail"] for f in exhausted)
    assert len(exhausted) == sum(1 for n in attempts.values() if n == 3)  # each line that failed 3 times is one failure
    assert sum(sum(u.get("retries", {}).values()) for u in stats["llm"].values()) == len(lines) - len(set(lines))
    images = {
        (r["source"], r["image_id"])
        for name in ("instructions", "rejected", "failures")
        for r in read_jsonl(str(tmp_path / "out"), name)
        if r.get("image_id")
    }
    assert len(images) == stats["accounting"]["inputs"]  # every input image ends somewhere


def test_the_cost_cap_fails_unpaid_items_and_a_higher_cap_continues(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-batch-secret")
    with FakeOpenAI(schema_json) as server:
        base = [
            "--llm",
            "openai",
            "--llm_base_url",
            server.base_url,
            "--llm_model",
            "fake",
            "--cache_dir",
            str(tmp_path / "cache"),
            "--llm_prices",
            "fake=1000:1000",
            "--llm_max_tokens",
            "200",
            "--llm_image_tokens",
            "85",
        ]  # the judges see the sample's pictures: priced per picture
        main.run([*base, "--output", str(tmp_path / "capped"), "--llm_max_cost_usd", "4"])
        paid = len(server.requests)
        failures = read_jsonl(str(tmp_path / "capped"), "failures")
        main.run([*base, "--output", str(tmp_path / "raised"), "--llm_max_cost_usd", "1000"])
        topped_up = len(server.requests) - paid
        main.run([*base, "--output", str(tmp_path / "uncapped"), "--cache_dir", str(tmp_path / "other-cache")])
        everything = len(server.requests) - paid - topped_up
    capped = read_stats(str(tmp_path / "capped"))
    assert capped["accounting"]["identity_holds"]
    budget = [f for f in failures if f["reason"] == "llm_budget_exhausted"]
    assert budget and paid + topped_up == everything  # nothing paid twice
    assert sum(u.get("cost", 0) for u in capped["llm"].values()) <= 4.0
    assert output_bytes(tmp_path / "raised") == output_bytes(tmp_path / "uncapped")


def test_cancel_asks_the_endpoint_to_cancel_the_batches_in_flight(tmp_path, capsys):
    hold = threading.Event()
    with FakeOpenAI(schema_json, batch_hold=hold) as server:
        job = subprocess.Popen(
            _command(_job(server, tmp_path / "out", tmp_path / "cache")),
            env=ENV,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert server.batch_polled.wait(timeout=300)
            listed = subprocess.run(
                [sys.executable, "-m", "beam_pipeline.batches", "list", "--cache_dir", str(tmp_path / "cache")],
                cwd=REPO,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            cancel = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "beam_pipeline.batches",
                    "cancel",
                    "--cache_dir",
                    str(tmp_path / "cache"),
                    "--llm_base_url",
                    server.base_url,
                ],
                env=ENV,
                cwd=REPO,
                check=True,
                capture_output=True,
                text=True,
            )
            assert job.wait(timeout=300) == 0  # the run reads the cancelled batch back and ends, its lines in failures/
        finally:
            job.kill()
        assert server.batches["batch_1"]["status"] == "cancelled"
    assert "batch_1" in listed and "generate" in listed
    assert cancel.stdout.split() == ["batch_1", "cancelling"]
    failures = read_jsonl(str(tmp_path / "out"), "failures")
    assert {f["reason"] for f in failures} >= {"generate_batch_cancelled"}


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--llm", "openai", "--llm_mode", "batch"], "needs --cache_dir"),
        (["--llm_mode", "batch", "--cache_dir", "c"], "needs --llm openai"),
        (["--llm", "openai", "--llm_max_cost_usd", "5"], "--llm_prices entry for gpt-4o-mini"),
    ],
)
def test_settings_that_cannot_run_together_stop_the_job_before_it_starts(tmp_path, flags, message):
    done = subprocess.run(
        _command([*flags, "--output", str(tmp_path / "out")]), env=ENV, cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 2 and message in done.stderr and not (tmp_path / "out").exists()


def test_batch_mode_on_two_worker_processes_writes_what_one_writes(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-batch-secret")
    with FakeOpenAI(schema_json) as server:
        main.run(_job(server, tmp_path / "one", tmp_path / "cache-one"))
        main.run(
            [
                *_job(server, tmp_path / "two", tmp_path / "cache-two"),
                "--direct_running_mode=multi_processing",
                "--direct_num_workers=2",
            ]
        )
        assert not server.requests
    assert output_bytes(tmp_path / "two") == output_bytes(tmp_path / "one") != {}
