"""Dedup and filters as transforms, exports read back by their target tools, the accounting check."""

from __future__ import annotations

import glob
import json
import os

import apache_beam as beam
import fastavro
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.util import assert_that, equal_to
from datasets import load_dataset
from label_studio_sdk.label_interface import LabelInterface

from beam_pipeline import dedup as beam_dedup
from beam_pipeline import main
from beam_pipeline.dedup import DeduplicateInstructions
from beam_pipeline.exports import parse_formats
from beam_pipeline.filters import FilterInstructions
from beam_pipeline.stats import SummarizeRun
from comvint import dedup as comvint_dedup
from comvint import exports, filters
from comvint.stats import AccountingError
from tests import consumers
from tests.beam_pipeline.helpers import local_pipeline, read_jsonl, read_stats


def record(id_: str, text: str, unit: str, answer: str = "yes", fmt: str = "open_ended", parent=None, round_: int = 0):
    return {
        "id": id_,
        "image_id": unit.split(":")[1],
        "source": unit.split(":")[0],
        "image": "x.jpg",
        "family": "cross_modal",
        "format": fmt,
        "instruction": text,
        "answer": answer,
        "round": round_,
        "parent_id": parent,
        "_unit": unit,
    }


ITEMS = [
    record("a1", "What is the man holding?", "flickr30k_entities:900004", answer="an umbrella"),
    record("a2", "What is the man holding?", "flickr30k_entities:900004", answer="a red umbrella"),  # exact
    # the same physical image reached from Visual Genome (flickr_id 900004): a near duplicate
    record("a3", "What is the man holding here?", "flickr30k_entities:900004", answer="an umbrella"),
    record("b1", "Is the dog right of the man?", "flickr30k_entities:1", fmt="bool", parent="p", answer="yes"),
    record(
        "b2", "Is the dog right of the man?", "flickr30k_entities:1", fmt="bool", parent="p", answer="no"
    ),  # sibling
    *[
        record(f"t{k}", "Is there a person in the picture?", f"visual_genome:{k}") for k in range(5)
    ],  # template collapse
    # near copies across images, "v2" only through "v1" (near v1, not the t's): one component, but v2 leads its own
    # cluster
    record("v1", "Is there a person in the picture now?", "visual_genome:20"),
    record("v2", "Is there any person in the picture now?", "visual_genome:21"),
    record("u1", "How many candles are on the cake?", "visual_genome:7", answer="three"),
    # one question, four pictures, four grounded answers: four examples, not a template repeated
    *[
        record(f"w{k}", "What is the man wearing?", f"visual_genome:{30 + k}", answer=a)
        for k, a in enumerate(
            ["A black wetsuit.", "An apron over a white shirt.", "A red football jersey.", "Nothing but swim trunks."]
        )
    ],
]


def _run_dedup(items, keep, waves=1):
    with local_pipeline() as p:
        out = p | beam.Create(items) | DeduplicateInstructions(max_per_cluster=keep, waves=waves)
        assert_that(out.kept | "KeptIds" >> beam.Map(lambda r: r["id"]), equal_to(EXPECTED_KEPT[keep]), label="Kept")
        assert_that(
            out.rejected
            | "Why" >> beam.Map(lambda r: (r["id"], r["stage"], r["reason"], r["duplicate_of"], "_unit" in r)),
            equal_to(EXPECTED_REJECTED[keep]),
            label="Rejected",
        )


EXPECTED_KEPT = {
    3: ["a1", "b1", "b2", "t0", "t1", "t2", "u1", "v2", "w0", "w1", "w2", "w3"],
    10: ["a1", "b1", "b2", "t0", "t1", "t2", "t3", "t4", "u1", "v1", "v2", "w0", "w1", "w2", "w3"],
}
EXPECTED_REJECTED = {
    3: [
        ("a2", "dedup", "duplicate_exact", "a1", False),
        ("a3", "dedup", "duplicate_near", "a1", False),
        ("t3", "dedup", "template_repeat", "t0", False),
        ("t4", "dedup", "template_repeat", "t0", False),
        ("v1", "dedup", "template_repeat", "t0", False),
    ],
    10: [("a2", "dedup", "duplicate_exact", "a1", False), ("a3", "dedup", "duplicate_near", "a1", False)],
}


@pytest.mark.parametrize("keep", [3, 10])
def test_deduplicate_instructions(keep):
    _run_dedup(ITEMS, keep)
    _run_dedup(ITEMS[::-1], keep)  # survivors do not depend on the input order


@pytest.mark.parametrize("waves", [3, 16])
def test_band_waves_decide_the_same(waves):
    _run_dedup(ITEMS, 3, waves)


def test_a_wave_of_bands_starts_after_the_previous_one_is_verified(monkeypatch):
    """On the local runner the band shuffles of a wave exist only once the previous wave's pairs are found."""
    calls = []
    band_entries, group_pairs = comvint_dedup.band_entries, comvint_dedup.group_pairs

    def logged_entries(sketch, bands):
        calls.append(("keys", tuple(bands)))
        return band_entries(sketch, bands)

    def logged_pairs(entries, threshold):
        calls.append(("verify", None))
        return group_pairs(entries, threshold)

    monkeypatch.setattr(comvint_dedup, "band_entries", logged_entries)
    monkeypatch.setattr(comvint_dedup, "group_pairs", logged_pairs)
    _run_dedup(ITEMS, 3, waves=4)
    runs = [calls[0]] + [
        c for prev, c in zip(calls, calls[1:], strict=False) if c != prev
    ]  # consecutive repeats as one
    waves = [bands for what, bands in runs if what == "keys"]
    assert waves == [(0, 4, 8, 12), (1, 5, 9, 13), (2, 6, 10, 14), (3, 7, 11, 15)]  # each wave's keys made in one go...
    assert [what for what, _ in runs] == ["keys", "verify"] * 4  # ...and verified before the next wave's are made


WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa".split()


def drifting_family(n: int) -> list[dict]:
    """n questions on n images, each one word away from the previous (a template drifting over the corpus)."""
    rng = __import__("random").Random(7)
    words = [rng.choice(WORDS) + str(k) for k in range(16)]
    family = []
    for k in range(n):
        words[k % 16] = f"{rng.choice(WORDS)}{k}"
        family.append(record(f"d{k:04d}", "What is " + " ".join(words) + "?", f"visual_genome:{k}"))
    return family


def test_a_drifting_template_is_capped_per_leader_not_per_chain():
    family = drifting_family(300)
    grams = [exports_grams(r) for r in family]
    assert all(comvint_dedup.jaccard(a, b) >= 0.75 for a, b in zip(grams, grams[1:], strict=False))  # one chain...
    assert comvint_dedup.jaccard(grams[0], grams[10]) < 0.5  # ...not a blob: ten steps apart is no near duplicate
    leaders = [
        d
        for d in comvint_dedup.cap_cluster(
            [(comvint_dedup.member(comvint_dedup.compact(r, r["_unit"]))[4], [(0, 0, r["id"])]) for r in family], keep=1
        )
    ]
    expected_kept = sorted(i for i, reason, _ in leaders if reason is None)
    assert 10 < len(expected_kept) < 200  # one per leader: many leaders along the chain, each nearer than the ends
    with local_pipeline() as p:
        out = p | beam.Create(family) | DeduplicateInstructions(max_per_cluster=1)
        assert_that(out.kept | "Ids" >> beam.Map(lambda r: r["id"]), equal_to(expected_kept), label="Kept")
        assert_that(out.clusters, equal_to([(i, lead) for i, _, lead in leaders]), label="Leaders")


def exports_grams(item: dict) -> frozenset:
    return comvint_dedup.grams(comvint_dedup.normalise(item["instruction"]))


def test_filter_instructions_transform():
    bad = record("c1", "Where is it?", "visual_genome:1", answer="At [1, 2, 3, 4].")
    with local_pipeline() as p:
        out = p | beam.Create([ITEMS[0], bad]) | FilterInstructions(filters.FilterConfig())
        assert_that(out.kept | beam.Map(lambda r: r["id"]), equal_to(["a1"]), label="Kept")
        assert_that(
            out.rejected | beam.Map(lambda r: (r["id"], r["stage"], r["reason"])),
            equal_to([("c1", "quality", "quality_leaks_coordinates")]),
            label="Rejected",
        )


def test_dedup_rejects_bad_settings():
    with pytest.raises(ValueError):
        DeduplicateInstructions(max_per_cluster=0)
    with pytest.raises(ValueError):
        parse_formats("llava,csv")


def test_main_job_dedups_and_every_export_reads_back(tmp_path):
    out = str(tmp_path)
    main.run(
        [
            "--output",
            out,
            "--export",
            "llava,messages,trl,avro,parquet,review",
            "--num_shards",
            "2",
            "--review_tasks",
            "7",
            "--dedup_threshold",
            "0.4",
            "--max_per_cluster",
            "2",
        ]
    )  # the sample is small and varied: find its repeats
    instructions, rejected, stats = read_jsonl(out, "instructions"), read_jsonl(out, "rejected"), read_stats(out)
    by_id = {r["id"]: r for r in instructions}
    assert {r["reason"] for r in rejected if r["stage"] == "dedup"} and {
        r["reason"] for r in rejected if r["stage"] == "dedup"
    } <= {"duplicate_exact", "duplicate_near", "template_repeat"}
    assert all(r["duplicate_of"] in by_id for r in rejected if r["stage"] == "dedup")
    assert stats["counts"]["rejected"]["stage"]["dedup"] == sum(1 for r in rejected if r["stage"] == "dedup")
    assert stats["rates"]["duplicate_rate"]["total"] > 0 and set(stats["rates"]["verification_pass_rate"]) == {
        "0",
        "1",
        "2",
    }
    assert sum(stats["rates"]["answer_position_share"].values()) == pytest.approx(1.0, abs=1e-3)

    (llava_file,) = glob.glob(f"{out}/export/llava/*")  # one file: what LLaVA's --data_path takes
    llava = json.load(open(llava_file))
    assert sorted(r["id"] for r in llava) == sorted(by_id) and os.path.basename(llava_file) == "comvint_llava.json"
    for row in llava:
        sample = consumers.llava_sample(row, "/data/images")
        assert sample["conversations"] == row["conversations"]  # the token is already where LLaVA puts it
        assert sample["image_file"] == "/data/images/" + by_id[row["id"]]["image"] and row == exports.to_llava(
            by_id[row["id"]]
        )

    for name, convert in (("messages", exports.to_messages), ("trl", exports.to_trl)):
        rows = read_jsonl(out, f"export/{name}")
        assert len(glob.glob(f"{out}/export/{name}/*.jsonl")) == 2
        assert sorted(r["id"] for r in rows) == sorted(by_id) and all(r == convert(by_id[r["id"]]) for r in rows)
    for row in read_jsonl(out, "export/messages"):
        assert consumers.llamafactory_sharegpt(row, "/media")["images"] == ["/media/" + by_id[row["id"]]["image"]]
    for row in read_jsonl(out, "export/trl"):
        user, answer = consumers.trl_vision(row)
        assert user.count("<|image|>") == 1 and answer == exports.answer_text(by_id[row["id"]])

    avro_rows = []
    for path in sorted(glob.glob(f"{out}/export/avro/*.avro")):
        with open(path, "rb") as handle:
            reader = fastavro.reader(handle)
            assert reader.writer_schema["name"] == "comvint.Instruction" and reader.codec == "deflate"
            avro_rows += list(reader)
    parquet_paths = sorted(glob.glob(f"{out}/export/parquet/*.parquet"))
    parquet_rows = [row for path in parquet_paths for row in pq.read_table(path).to_pylist()]
    expected = sorted((exports.to_table_row(r) for r in instructions), key=lambda r: r["id"])
    assert sorted(avro_rows, key=lambda r: r["id"]) == expected
    assert sorted(parquet_rows, key=lambda r: r["id"]) == expected
    parquet = pq.ParquetFile(parquet_paths[0])
    assert parquet.schema_arrow.equals(exports.arrow_schema())
    assert {parquet.metadata.row_group(0).column(k).compression for k in range(parquet.metadata.num_columns)} == {
        "ZSTD"
    }
    for name in ("id", "instruction", "round", "llm", "grounding"):  # what Avro declares non-null is required
        assert not parquet.schema_arrow.field(name).nullable
    assert "element" in str(parquet.schema) and "array" not in str(parquet.schema)  # the standard list layout

    # The review export: a seeded sample, read by Label Studio's own config parser and task check.
    review = LabelInterface(open(f"{out}/export/review/labeling_config.xml").read())
    review.validate()  # raises on a broken config (e.g. a toName that names no object)
    tasks = json.load(open(f"{out}/export/review/tasks.json"))
    assert len(tasks) == 7 and all(review.validate_task(t) for t in tasks)
    assert [t["meta"]["id"] for t in tasks] == sorted(t["meta"]["id"] for t in tasks) and {
        t["meta"]["id"] for t in tasks
    } <= set(by_id)
    for task in tasks:
        record = by_id[task["meta"]["id"]]
        assert task["data"]["image"] == f"/data/local-files/?d={record['image']}"  # Label Studio's local file serving
        assert (
            task["data"]["question"].startswith(record["instruction"])
            and task["meta"]["parent_id"] == record["parent_id"]
        )
        assert (
            task["data"]["verdict"]
            == {True: "passed", False: "failed", None: "not judged"}[record["verification"]["passed"]]
        )


def test_default_shards_follow_the_data(tmp_path):
    out = str(tmp_path)
    main.run(["--output", out, "--shard_mb", "0.01"])  # 10 KB shards
    size = sum(os.path.getsize(p) for p in glob.glob(f"{out}/instructions/*.jsonl"))
    assert len(glob.glob(f"{out}/instructions/*.jsonl")) == -(-size // 10485) > 1
    main.run(["--output", str(tmp_path / "b")])
    assert len(glob.glob(f"{tmp_path}/b/instructions/*.jsonl")) == 1  # the sample is far below 100 MB


def test_accounting_check_fails_a_broken_pipeline(tmp_path, monkeypatch):
    monkeypatch.setattr(beam_dedup, "_apply", lambda joined: [])  # a bug that loses every instruction
    with pytest.raises(Exception, match="inputs ended in no output") as err:
        main.run(["--output", str(tmp_path)])
    assert "AccountingError" in repr(err.value) or isinstance(err.value, AccountingError)
    stats = read_stats(str(tmp_path))
    assert not stats["accounting"]["identity_holds"] and stats["accounting"]["unaccounted"] > 0
    assert not any(
        (tmp_path / d).exists() for d in ("instructions", "rejected", "failures", "report.html")
    )  # nothing looks complete


def test_losing_some_items_of_an_image_fails_the_run(tmp_path, monkeypatch):
    apply = beam_dedup._apply

    def lossy(joined):  # a bug that loses the multiple-choice items; every image keeps others
        return [out for out in apply(joined) if not (isinstance(out, dict) and out["format"] == "multiple_choice")]

    monkeypatch.setattr(beam_dedup, "_apply", lossy)
    with pytest.raises(Exception, match="items created, [1-9][0-9]* ended in no output"):
        main.run(["--output", str(tmp_path)])
    accounting = read_stats(str(tmp_path))["accounting"]
    assert accounting["identity_holds"]  # per image, nothing shows...
    items = accounting["items"]  # ...per item, the loss does
    assert not items["identity_holds"] and items["missing"] > 0 == items["in_two_places"] + items["never_created"]
    assert 0 < len(items["examples"]["missing"]) <= 5 and not (tmp_path / "instructions").exists()


def test_every_item_ends_in_exactly_one_sink(tmp_path):
    out = str(tmp_path)
    main.run(["--output", out])
    ends = [r["id"] for name in ("instructions", "rejected") for r in read_jsonl(out, name) if "id" in r]
    ends += [f["item_id"] for f in read_jsonl(out, "failures") if f["stage"] == "verify"]
    stats = read_stats(out)
    assert len(ends) == len(set(ends)) == stats["accounting"]["items"]["created"]
    assert stats["counts"]["skipped"]["total"] > 0  # counted (e.g. no multiple choice for an item), and in no sink
    assert not any(r["reason"] == "reformulate_not_applicable" for r in read_jsonl(out, "rejected"))


def test_summarize_run_counts_a_lost_unit(tmp_path):
    with pytest.raises(Exception, match=r"1 of 2 inputs ended in no output \(e.g. \[.flickr30k_entities/2.\]\)"):
        with local_pipeline() as p:
            inputs = p | "Inputs" >> beam.Create(["flickr30k_entities/1", "flickr30k_entities/2"])
            kept = p | "Kept" >> beam.Create([{"source": "flickr30k_entities", "image_id": "1", "format": "bool"}])
            {"inputs": inputs, "instructions": kept} | SummarizeRun(str(tmp_path))
    assert os.path.exists(tmp_path / "stats.json")


def test_a_rerun_with_other_shards_leaves_no_stale_files(tmp_path):
    out = str(tmp_path)
    main.run(["--output", out, "--num_shards", "3"])
    first = read_jsonl(out, "instructions")
    main.run(["--output", out, "--num_shards", "2"])
    assert sorted(os.path.basename(p) for p in glob.glob(f"{out}/instructions/*")) == [
        "part-00000-of-00002.jsonl",
        "part-00001-of-00002.jsonl",
    ]
    assert sorted(r["id"] for r in read_jsonl(out, "instructions")) == sorted(r["id"] for r in first)


def test_band_waves_follow_the_runner_unless_set():
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_pipeline.options import ComvintOptions
    from beam_pipeline.pipeline import band_waves

    def waves(*argv):
        return band_waves(PipelineOptions(list(argv)).view_as(ComvintOptions))

    assert waves("--runner=FnApiRunner") == comvint_dedup.BANDS  # in memory: one band at a time
    assert waves("--runner=DataflowRunner") == waves("--runner=FlinkRunner") == 1  # external shuffle: all at once
    assert waves("--runner=DataflowRunner", "--dedup_band_waves=4") == 4


def test_the_dataset_card_loads_the_parquet_export_with_datasets(tmp_path, monkeypatch):
    """With a Parquet export, the card's default config is the Parquet files: `datasets` loads them."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "out"
    main.run(["--output", str(out), "--export", "parquet"])
    card = (out / "README.md").read_text()
    assert "path: export/parquet/*.parquet" in card
    loaded = load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf"))
    assert sorted(loaded["id"]) == sorted(r["id"] for r in read_jsonl(str(out), "instructions"))
    assert loaded.features["options"].feature.dtype == "string"  # typed by the Parquet schema, not guessed
