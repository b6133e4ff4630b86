"""A self-hosted model next to the job (--llm_server_cmd): the project's fake endpoint started as that server,
shared by every stage, stopped at the end, a rerun served from the cache; a server that dies or never answers
fails the job fast with what it printed."""

from __future__ import annotations

import os
import shlex
import sys

import pytest

from beam_pipeline import main
from comvint.llm.config import ConfigError
from comvint.llm.server import LocalServer, ServerError
from tests.beam_pipeline.helpers import read_jsonl, read_stats

FAKE = f"{shlex.quote(sys.executable)} -m comvint.testing.fake_openai --port {{port}} --reply schema"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_every_stage_goes_to_the_workers_own_server(tmp_path):
    pid_file = tmp_path / "server.pid"
    job = [
        "--llm",
        "openai",
        "--llm_model",
        "fake",
        "--llm_server_cmd",
        f"{FAKE} --pid_file {pid_file}",
        "--llm_image_stages",
        "none",
        "--cache_dir",
        str(tmp_path / "cache"),
    ]
    main.run([*job, "--output", str(tmp_path / "out")])
    pid = int(pid_file.read_text())
    assert not alive(pid)  # the last stage to let go of it stopped it
    stats = read_stats(str(tmp_path / "out"))
    assert stats["accounting"]["identity_holds"] and read_jsonl(str(tmp_path / "out"), "instructions")
    assert {s for s, usage in stats["llm"].items() if usage.get("requests")} == {
        "generate",
        "complicate",
        "verify",
        "reformulate",
        "verify_reformulated",
    }
    main.run(
        [*job, "--output", str(tmp_path / "again")]
    )  # a new server on another port: the cache key names the command
    again = read_stats(str(tmp_path / "again"))
    assert all(
        usage.get("requests", 0) == 0 and usage["cache_hits"] == usage["calls"] for usage in again["llm"].values()
    )


def test_a_server_that_exits_fails_fast_with_what_it_printed():
    with pytest.raises(ServerError, match=r"exited with code 3 .*no weights here"):
        LocalServer(
            f"{shlex.quote(sys.executable)} -c \"import sys; print('no weights here'); sys.exit(3)\" {{port}}",
            startup_s=60,
        )


class FakeClock:
    """Time that passes only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_a_server_that_never_answers_is_stopped_at_the_deadline():
    code = "import threading; threading.Event().wait()"  # never listens, never exits
    clock = FakeClock()
    with pytest.raises(ServerError, match=r"not ready within 600 s") as raised:
        LocalServer(
            f"{shlex.quote(sys.executable)} -c {shlex.quote(code)} {{port}}",
            startup_s=600,
            clock=clock.time,
            sleep=clock.sleep,
        )
    assert clock.now > 600 and not alive(raised.value.pid)


def test_the_job_fails_when_its_server_cannot_start(tmp_path):
    with pytest.raises(Exception, match="exited with code 2"):
        main.run(
            [
                "--llm",
                "openai",
                "--llm_server_cmd",
                f"{shlex.quote(sys.executable)} -c 'import sys; sys.exit(2)' {{port}}",
                "--output",
                str(tmp_path / "out"),
            ]
        )


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--llm_base_url", "http://127.0.0.1:1/v1"], "no --llm_base_url"),
        (["--llm_mode", "batch", "--cache_dir", "c"], "online mode"),
    ],
)
def test_settings_a_local_server_cannot_serve_are_refused(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        main.run(["--llm", "openai", "--llm_server_cmd", f"{FAKE}", *extra, "--output", str(tmp_path / "out")])
