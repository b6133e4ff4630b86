"""Ingest transforms and the ingest job, from TestPipeline up to the Dataflow dry run."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from beam_pipeline import main
from beam_pipeline.sources import ReadFlickr30k, ReadVisualGenome
from tests.beam_pipeline.helpers import local_pipeline, read_jsonl, read_stats
from tests.conftest import DATA, REPO

GOOD_XML = (DATA / "flickr30k_entities/Annotations/900002.xml").read_bytes()
GOOD_TXT = (DATA / "flickr30k_entities/Sentences/900002.txt").read_bytes()


@pytest.fixture
def flickr_tree(tmp_path):
    """A Flickr30k tree with two good images and one of each bad-file kind."""
    files = {
        "1": (GOOD_TXT, GOOD_XML),
        "2": (GOOD_TXT, GOOD_XML),
        "3": (GOOD_TXT, None),
        "4": (None, GOOD_XML),
        "5": (GOOD_TXT, GOOD_XML[:150]),
        "6": (b"\xc3\x28 broken", GOOD_XML),
        "7": (b"", GOOD_XML),
        "8": (b"[/EN#1/people A man .\n", GOOD_XML),
        "9": (GOOD_TXT, GOOD_XML.replace(b"<xmin>100</xmin>", b"<xmin>ten</xmin>")),
        "10": (
            GOOD_TXT,
            GOOD_XML.replace(b"<xmin>100</xmin>", b"<xmin>9000</xmin>").replace(
                b"<xmax>260</xmax>", b"<xmax>9999</xmax>"
            ),
        ),
        "11": (GOOD_TXT, GOOD_XML.replace(b"<xmin>100</xmin>", b"<xmin>300</xmin>")),
        "12": (GOOD_TXT, GOOD_XML.split(b"<size>")[0] + GOOD_XML.split(b"</size>")[1]),
    }
    for kind in ("Sentences", "Annotations"):
        (tmp_path / kind).mkdir()
    for image_id, (txt, xml) in files.items():
        if txt is not None:
            (tmp_path / "Sentences" / f"{image_id}.txt").write_bytes(txt)
        if xml is not None:
            (tmp_path / "Annotations" / f"{image_id}.xml").write_bytes(xml)
    return tmp_path


EXPECTED_FAILURES = [
    ("3", "ingest_missing_xml", "Sentences/3.txt"),
    ("4", "ingest_missing_sentences", "Annotations/4.xml"),
    ("5", "ingest_malformed_xml", "Annotations/5.xml"),
    ("6", "ingest_invalid_utf8", "Sentences/6.txt"),
    ("7", "ingest_empty_sentences", "Sentences/7.txt"),
    ("8", "ingest_unbalanced_bracket", "Sentences/8.txt"),
    ("9", "ingest_bad_box", "Annotations/9.xml"),
    ("10", "ingest_box_outside_image", "Annotations/10.xml"),
    ("11", "ingest_bad_box", "Annotations/11.xml"),
    ("12", "ingest_missing_size", "Annotations/12.xml"),
]


def test_read_flickr30k_reports_every_bad_file(flickr_tree):
    root = str(flickr_tree)
    with local_pipeline() as p:
        read = p | ReadFlickr30k(root)
        ids = read.records | "Ids" >> beam.Map(lambda r: (r["image_id"], len(r["captions"]), len(r["entities"])))
        assert_that(ids, equal_to([("1", 5, 6), ("2", 5, 6)]), label="Records")
        failures = read.failures | "Fail" >> beam.Map(lambda f: (f.image_id, f.reason, os.path.relpath(f.path, root)))
        assert_that(failures, equal_to(EXPECTED_FAILURES), label="Failures")


def test_read_flickr30k_split_and_limit(flickr_tree):
    with local_pipeline() as p:
        read = p | ReadFlickr30k(str(flickr_tree), split=frozenset({"2", "3", "99"}))
        assert_that(read.records | "R" >> beam.Map(lambda r: r["image_id"]), equal_to(["2"]), label="Records")
        assert_that(read.failures | "F" >> beam.Map(lambda f: f.image_id), equal_to(["3"]), label="Failures")
    with local_pipeline() as p:
        read = p | ReadFlickr30k(str(flickr_tree), limit=2)
        ids = (
            (read.records, read.failures)
            | beam.Flatten()
            | beam.Map(lambda x: x["image_id"] if isinstance(x, dict) else x.image_id)
        )
        assert_that(ids, equal_to(["1", "2"]))


def test_read_visual_genome_split_ranges_and_truncation(tmp_path):
    objs = [
        {
            "regions": [
                {"region_id": i, "width": 3, "height": 4, "image_id": i, "phrase": f" thing {i}\n", "y": 1, "x": 2}
            ],
            "id": i,
        }
        for i in range(30)
    ]
    path = tmp_path / "regions.json"
    data = json.dumps(objs).encode()
    path.write_bytes(data[: len(data) - 40])
    with local_pipeline() as p:
        read = p | ReadVisualGenome(str(path), split_bytes=50)
        ids = read.records | "Ids" >> beam.Map(lambda r: (r["image_id"], r["regions"][0]["phrase"]))
        assert_that(ids, equal_to([(str(i), f"thing {i}") for i in range(29)]), label="Records")
        assert_that(
            read.failures | "F" >> beam.Map(lambda f: (f.reason, f.path)),
            equal_to([("ingest_vg_truncated", str(path))]),
            label="Failures",
        )


def _check_sample_ingest(output: str) -> None:
    stats = read_stats(output)
    annotations = read_jsonl(output, "annotations")
    failures = read_jsonl(output, "failures")
    assert sorted((a["source"], a["image_id"]) for a in annotations) == sorted(
        [("flickr30k_entities", i) for i in ("900001", "900002", "900003", "900004", "900005", "900007")]
        + [("visual_genome", str(i)) for i in range(1, 7)]
    )
    assert [(f["image_id"], f["reason"]) for f in failures] == [("900006", "ingest_box_outside_image")]
    assert stats["accounting"] == {
        "inputs": 13,
        "accounted": 13,
        "unaccounted": 0,
        "unaccounted_examples": [],
        "identity_holds": True,
    }
    assert stats["counts"]["annotations"]["total"] + stats["counts"]["failures"]["total"] == 13
    dropped = [a for a in annotations if a.get("dropped_captions")]
    assert [(a["image_id"], len(a["captions"])) for a in dropped] == [("900004", 4)]


def test_ingest_job_on_bundled_sample(tmp_path):
    main.run(["--stages", "ingest", "--output", str(tmp_path), "--write_convert"])
    _check_sample_ingest(str(tmp_path))
    convert = (tmp_path / "Convert" / "900002.txt").read_text()
    assert "bikes [479, 329, 630, 420] [9, 339, 90, 420] lying" in convert


def test_ingest_job_multi_processing(tmp_path):
    main.run(
        [
            "--stages",
            "ingest",
            "--output",
            str(tmp_path),
            "--direct_running_mode=multi_processing",
            "--direct_num_workers=2",
        ]
    )
    _check_sample_ingest(str(tmp_path))


def test_ingest_job_portable_runner(tmp_path):
    main.run(
        [
            "--stages",
            "ingest",
            "--output",
            str(tmp_path),
            "--runner=PortableRunner",
            "--job_endpoint=embed",
            "--environment_type=LOOPBACK",
        ]
    )
    _check_sample_ingest(str(tmp_path))


def test_dataflow_dry_run_builds_the_job(tmp_path):
    env = {**os.environ, "DRY_RUN": "1", "PYTHON": sys.executable, "OUTPUT": str(tmp_path)}
    proc = subprocess.run(
        ["bash", str(REPO / "run_dataflow.sh"), "--stages", "ingest"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '"state": "DONE"' in proc.stdout


def test_default_runner_is_pinned_offline():
    options = main.make_options([])
    assert options.view_as(beam.options.pipeline_options.StandardOptions).runner == "FnApiRunner"


def test_no_input_flags_means_bundled_sample():
    from beam_pipeline.options import ComvintOptions
    from beam_pipeline.pipeline import resolve_sources

    flickr, vg, info = resolve_sources(main.make_options([]).view_as(ComvintOptions))
    assert flickr.endswith("data/flickr30k_entities") and vg.endswith("region_descriptions.json") and info
    assert shutil.which("bash")


def test_unknown_arguments_are_refused_by_name(capsys, monkeypatch):
    with pytest.raises(main.UsageError, match="--llm_modle"):
        main.run(["--llm_modle", "x", "--output", "/nonexistent"])
    assert (
        main.unknown_flags(["--runner=FnApiRunner", "--project", "p", "--direct_num_workers=2", "--llm", "openai"])
        == []
    )
    monkeypatch.setattr(sys, "argv", ["comvint", "--llm_batch=true"])
    with pytest.raises(SystemExit) as exit_info:
        main.main()
    assert exit_info.value.code == 2 and "unknown argument(s) --llm_batch" in capsys.readouterr().err


def test_stages_are_validated():
    with pytest.raises(SystemExit):
        main.run(["--stages", "ingest,generate", "--output", "/nonexistent"])


def test_help_lists_every_flag_by_group(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["comvint", "--help"])
    main.main()
    text = capsys.readouterr().out
    assert text.startswith("usage: python -m beam_pipeline.main [flags] [Beam pipeline options]")
    for group in ("inputs:", "method:", "LLM:", "dedup and filters:", "outputs:"):
        assert f"\n{group}\n" in text
    from beam_pipeline.options import ComvintOptions

    parser = argparse.ArgumentParser()
    ComvintOptions._add_argparse_args(parser)
    flags = [a.option_strings[0] for a in parser._actions if a.option_strings and a.dest != "help"]
    assert len(flags) > 40 and all(flag in text for flag in flags)
    assert "(default: offline)" in text and "beam.apache.org" in text


def test_shard_lines_keep_key_size_and_shard_and_sort_as_before():
    from beam_pipeline.sinks import line_shard, line_size, pack_line, stable_shard, unpack_line

    records = [("b", '{"id":"b"}'), ("a", '{"id":"a","t":"é"}'), ("a\nz", "{}"), ("", '{"x":1}'), ("ab", '{"y":"«»"}')]
    values = [pack_line(key, line) for key, line in records]
    assert [unpack_line(v) for v in values] == [(k, line.encode("utf-8")) for k, line in records]
    assert [line_size(v) for v in values] == [len(line.encode("utf-8")) + 1 for _, line in records]  # bytes in the file
    assert [line_shard(v, 7) for v in values] == [stable_shard(k, 7) for k, _ in records]
    assert [line for _, line in sorted(map(unpack_line, values))] == [line.encode() for _, line in sorted(records)]


def test_visual_genome_scene_files_are_joined_by_image_and_orphans_are_failures(tmp_path):
    regions = [{"id": 1, "regions": [{"region_id": 10, "x": 0, "y": 0, "width": 5, "height": 5, "phrase": "a dog"}]}]
    objects = [
        {
            "image_id": 1,
            "objects": [{"object_id": 3, "names": ["dog"], "synsets": ["dog.n.01"], "x": 0, "y": 0, "w": 5, "h": 5}],
        },
        {"image_id": 2, "objects": [{"object_id": 4, "names": ["cat"], "synsets": [], "x": 0, "y": 0, "w": 5, "h": 5}]},
    ]
    (tmp_path / "region_descriptions.json").write_text(json.dumps(regions))
    (tmp_path / "objects.json").write_text(json.dumps(objects))
    out = str(tmp_path / "out")
    main.run(["--vg_regions", str(tmp_path / "region_descriptions.json"), "--stages", "ingest", "--output", out])
    [record] = read_jsonl(out, "annotations")
    assert [o["object_id"] for o in record["objects"]] == ["3"] and record["relationships"] == []
    assert [(f["reason"], f["image_id"]) for f in read_jsonl(out, "failures")] == [("ingest_vg_no_regions", "2")]
    main.run(
        [
            "--vg_regions",
            str(tmp_path / "region_descriptions.json"),
            "--vg_objects",
            "none",
            "--stages",
            "ingest",
            "--output",
            out,
        ]
    )
    assert "objects" not in read_jsonl(out, "annotations")[0]
