"""gs:// end to end against a local GCS emulator (gcp-storage-emulator) that the test starts."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import fastavro
import pytest
from apache_beam.internal.gcp import auth
from apache_beam.io.filesystems import FileSystems

from beam_pipeline import main, report
from beam_pipeline.stores import FileSystemsStore
from tests.conftest import DATA

BUCKET = "comvint-test"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, deadline_s: float = 60.0) -> None:
    """Block until the emulator accepts connections (or fail if it died)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            pass
        try:
            process.wait(timeout=0.1)  # returns only if the emulator died
        except subprocess.TimeoutExpired:
            continue
        raise RuntimeError(f"GCS emulator exited with {process.returncode}")
    raise TimeoutError("GCS emulator did not start")


@pytest.fixture(scope="module")
def gcs_emulator():
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "gcp_storage_emulator",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--in-memory",
        "--default-bucket",
        BUCKET,
    ]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def gcs(gcs_emulator, monkeypatch):
    """Point google-cloud-storage (and so Beam's GcsIO) at the emulator.

    Beam looks for Google credentials once per process and, finding none,
    connects anonymously after about 30 s of retries. The emulator needs no
    credentials, so the test records that outcome up front instead of waiting.
    """
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    monkeypatch.setattr(auth._Credentials, "_credentials_init", True)
    monkeypatch.setattr(auth._Credentials, "_credentials", None)
    return f"gs://{BUCKET}"


def _upload(local_root, prefix: str) -> None:
    for path in sorted(local_root.rglob("*")):
        if path.is_file():
            with FileSystems.create(f"{prefix}/{path.relative_to(local_root)}") as handle:
                handle.write(path.read_bytes())


def _read(path: str) -> bytes:
    with FileSystems.open(path, compression_type="uncompressed") as handle:
        return handle.read()


def _lines(pattern: str) -> list[dict]:
    return [
        json.loads(line) for m in FileSystems.match([pattern])[0].metadata_list for line in _read(m.path).splitlines()
    ]


def test_whole_job_reads_and_writes_gcs(gcs):
    _upload(DATA, f"{gcs}/data")
    out = f"{gcs}/run1"
    main.run(
        [
            "--flickr_root",
            f"{gcs}/data/flickr30k_entities",
            "--vg_regions",
            f"{gcs}/data/visual_genome/region_descriptions.json",
            "--vg_image_data",
            f"{gcs}/data/visual_genome/image_data.json",
            "--output",
            out,
            "--export",
            "avro,llava",
            "--write_annotations",
            "--vg_split_mb",
            "1",
        ]
    )
    stats = json.loads(_read(f"{out}/stats.json"))
    assert stats["accounting"]["identity_holds"] and stats["accounting"]["inputs"] == 13
    instructions = _lines(f"{out}/instructions/*.jsonl")
    assert len(instructions) == stats["counts"]["instructions"]["total"] > 0
    assert len(_lines(f"{out}/annotations/*.jsonl")) == stats["counts"]["funnel"]["step"]["images"] == 12
    assert "annotations" not in stats["counts"]  # a copy of the input is no end of it: only outputs account for inputs
    assert {f["reason"] for f in _lines(f"{out}/failures/*.jsonl")} == {"ingest_box_outside_image"}
    (avro,) = FileSystems.match([f"{out}/export/avro/*.avro"])[0].metadata_list
    with FileSystems.open(avro.path) as handle:
        assert len(list(fastavro.reader(handle))) == len(instructions)
    html = _read(f"{out}/report.html")
    FileSystems.delete([f"{out}/report.html"])
    assert (
        report.main([out]) == f"{out}/report.html" and _read(f"{out}/report.html") == html
    )  # rebuilt from gs:// alone


def test_response_cache_on_gcs_is_write_once(gcs):
    store = FileSystemsStore(f"{gcs}/cache")
    assert not store.fast  # remote: the runner calls it from a worker thread
    assert store.get("ab12") is None
    assert store.put_if_absent("ab12", '{"reply": 1}') is True
    assert store.put_if_absent("ab12", '{"reply": 2}') is False
    assert store.get("ab12") == '{"reply": 1}'


def test_a_gcs_cache_write_that_loses_the_race_says_so(monkeypatch):
    """GCS refuses the second of two concurrent creates (if_generation_match=0); the emulator does not
    implement preconditions, so the refusal is played by a stand-in bucket."""
    from apache_beam.io.gcp import gcsio
    from google.api_core.exceptions import PreconditionFailed

    from beam_pipeline.stores import _create_object_once

    uploads = []

    class Blob:
        def exists(self):
            return False  # both racers looked before either wrote

        def upload_from_string(self, data, content_type, if_generation_match):
            uploads.append(if_generation_match)
            if len(uploads) > 1:
                raise PreconditionFailed("already exists")

    class Client:
        def bucket(self, name):
            return type("Bucket", (), {"blob": lambda self, n: Blob()})()

    monkeypatch.setattr(gcsio.GcsIO, "__init__", lambda self, *a, **k: setattr(self, "client", Client()))
    assert _create_object_once("gs://b/cache/ab/ab12.json", b"1") is True
    assert _create_object_once("gs://b/cache/ab/ab12.json", b"2") is False and uploads == [0, 0]
