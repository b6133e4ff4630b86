"""Hostile input trees through the whole job (issue 24): an image id that is a path, a symlink out of the input
tree, a picture that links out of --image_root. Each ends as a failure record with its reason; nothing outside
the trees a user names is read, written or sent."""

from __future__ import annotations

import json
import os
import shutil

from beam_pipeline import main
from beam_pipeline.options import SAMPLE_FLICKR, SAMPLE_IMAGES
from tests.beam_pipeline.helpers import read_jsonl, read_stats


def everything_written(out) -> str:
    return "".join(p.read_text(errors="ignore") for p in out.rglob("*") if p.is_file())


def test_an_image_id_that_is_a_path_is_refused(tmp_path):
    regions = [
        {
            "id": "../../secret/x",
            "regions": [
                {
                    "region_id": 1,
                    "image_id": "../../secret/x",
                    "phrase": "a cat",
                    "x": 1,
                    "y": 1,
                    "width": 10,
                    "height": 10,
                }
            ],
        },
        {
            "id": 7,
            "regions": [
                {"region_id": 2, "image_id": 7, "phrase": "a red kite", "x": 1, "y": 1, "width": 10, "height": 10}
            ],
        },
    ]
    image_data = [{"image_id": 7, "width": 100, "height": 100, "url": "https://x/VG_100K/.."}]
    (tmp_path / "r.json").write_text(json.dumps(regions))
    (tmp_path / "i.json").write_text(json.dumps(image_data))
    out = tmp_path / "out"
    main.run(
        [
            "--vg_regions",
            str(tmp_path / "r.json"),
            "--vg_image_data",
            str(tmp_path / "i.json"),
            "--vg_objects",
            "none",
            "--vg_attributes",
            "none",
            "--vg_relationships",
            "none",
            "--stages",
            "ingest",
            "--write_annotations",
            "--output",
            str(out),
        ]
    )
    (failure,) = read_jsonl(str(out), "failures")
    assert failure["reason"] == "ingest_bad_image_id"
    (record,) = read_jsonl(str(out), "annotations")
    assert (
        record["image_id"] == "7" and record["image"] == "visual_genome/7.jpg"
    )  # the url's "../.." is not a path here
    assert read_stats(str(out))["accounting"]["identity_holds"]


def test_a_link_out_of_the_input_tree_is_never_read(tmp_path):
    tree = tmp_path / "flickr"
    shutil.copytree(SAMPLE_FLICKR, tree)
    secret = tmp_path / "secret.txt"
    secret.write_text(
        "[/EN#1/people A SECRETWORD man] reads a very long letter aloud to the whole crowded and noisy room .\n" * 5
    )
    (tree / "Sentences" / "900001.txt").unlink()
    os.symlink(secret, tree / "Sentences" / "900001.txt")
    out = tmp_path / "out"
    main.run(["--flickr_root", str(tree), "--write_annotations", "--output", str(out)])
    assert {(f["image_id"], f["reason"]) for f in read_jsonl(str(out), "failures")} >= {
        ("900001", "ingest_outside_tree")
    }
    assert "SECRETWORD" not in everything_written(out)
    assert read_stats(str(out))["accounting"]["identity_holds"]


def test_a_picture_linking_out_of_the_image_root_is_neither_sent_nor_embedded(tmp_path):
    root = tmp_path / "images"
    shutil.copytree(SAMPLE_IMAGES, root)
    outside = tmp_path / "outside.jpg"
    shutil.copy(root / "flickr30k-images" / "900003.jpg", outside)
    (root / "flickr30k-images" / "900003.jpg").unlink()
    os.symlink(outside, root / "flickr30k-images" / "900003.jpg")
    out = tmp_path / "out"
    main.run(["--image_root", str(root), "--output", str(out)])
    lost = [f for f in read_jsonl(str(out), "failures") if f["image_id"] == "900003"]
    assert lost and {f["reason"] for f in lost} <= {"verify_image_missing", "verify_reformulated_image_missing"}
    assert all("resolves outside" in f["detail"] for f in lost)
    html = (out / "report.html").read_text()
    data = json.loads(html.split('id="report-data">', 1)[1].split("</script>", 1)[0])
    assert all(not i.get("picture") for i in data["images"] if i["image_id"] == "900003")


def _vg_job(tmp_path, regions, image_data_text):
    (tmp_path / "r.json").write_text(json.dumps(regions))
    (tmp_path / "i.json").write_text(image_data_text)
    out = tmp_path / "out"
    main.run(
        [
            "--vg_regions",
            str(tmp_path / "r.json"),
            "--vg_image_data",
            str(tmp_path / "i.json"),
            "--vg_objects",
            "none",
            "--vg_attributes",
            "none",
            "--vg_relationships",
            "none",
            "--stages",
            "ingest",
            "--write_annotations",
            "--output",
            str(out),
        ]
    )
    return out


def _image(i: int) -> dict:
    return {
        "id": i,
        "regions": [{"region_id": i, "image_id": i, "phrase": "a red kite", "x": 1, "y": 1, "width": 10, "height": 10}],
    }


def test_the_same_image_twice_is_read_once_and_the_copy_fails(tmp_path):
    out = _vg_job(
        tmp_path,
        [_image(1), _image(2), {**_image(1), "regions": [{**_image(1)["regions"][0], "phrase": "a dog"}]}],
        json.dumps([{"image_id": i, "width": 100, "height": 80} for i in (1, 2)]),
    )
    assert sorted(r["image_id"] for r in read_jsonl(str(out), "annotations")) == ["1", "2"]
    assert [(f["image_id"], f["reason"]) for f in read_jsonl(str(out), "failures")] == [("1", "ingest_duplicate_image")]
    assert read_stats(str(out))["accounting"]["identity_holds"]


def test_an_impossible_image_size_fails_its_image(tmp_path):
    out = _vg_job(
        tmp_path,
        [_image(1), _image(2), _image(3)],
        '[{"image_id": 1, "width": NaN, "height": 80}, {"image_id": 2, "width": 100, "height": -600}, '
        '{"image_id": 3, "width": 100, "height": 80}]',
    )
    assert [r["image_id"] for r in read_jsonl(str(out), "annotations")] == ["3"]
    assert sorted((f["image_id"], f["reason"]) for f in read_jsonl(str(out), "failures")) == [
        ("1", "ingest_bad_image_size"),
        ("2", "ingest_bad_image_size"),
    ]


def test_a_broken_image_data_file_is_one_failure_and_the_images_are_still_read(tmp_path):
    for text in ("", '{"not": "an array"}', "[" * 100_000 + "]" * 100_000):
        out = _vg_job(tmp_path, [_image(1), _image(2)], text)
        assert sorted(r["image_id"] for r in read_jsonl(str(out), "annotations")) == ["1", "2"]
        assert [f["reason"] for f in read_jsonl(str(out), "failures")] == ["ingest_bad_image_data"]
        assert read_stats(str(out))["accounting"]["identity_holds"]
