"""The picture in the loop, through the whole job: the judges' calls carry the picture (online and in batch
files), the judge's verdict can depend on it, image tokens are in the cost, a rerun pays nothing, and a
missing or broken picture is a dead letter, never a text-only call."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image, ImageStat

from beam_pipeline import main
from beam_pipeline.options import SAMPLE_IMAGES
from comvint.testing import openai_flags
from comvint.testing.fake_openai import FakeOpenAI, pictures_of, schema_json
from tests.beam_pipeline.helpers import read_jsonl, read_stats

JUDGES = ("verdict",)


def judge_by_picture(body: dict) -> str:
    """Any schema's minimal reply; a verdict is "no" when the picture is mostly red (what a model would see)."""
    if body["response_format"]["json_schema"]["name"] != "verdict":
        return schema_json(body)
    ((image, _),) = pictures_of(body)
    r, g, b = ImageStat.Stat(image.convert("RGB")).mean
    return json.dumps({"evidence": f"mean colour {r:.0f},{g:.0f},{b:.0f}", "verdict": "no" if r > g + b else "yes"})


def parts(body: dict) -> list[str]:
    return [p["type"] for m in body["messages"] if isinstance(m["content"], list) for p in m["content"]]


@pytest.fixture
def pictures(tmp_path):
    root = tmp_path / "images"
    shutil.copytree(SAMPLE_IMAGES, root)
    red = root / "visual_genome" / "VG_100K" / "3.jpg"
    with Image.open(red) as image:
        Image.new("RGB", image.size, (220, 20, 20)).save(red, "JPEG")
    return root


@pytest.mark.parametrize("mode", ["online", "batch"])
def test_the_judges_see_the_picture_and_their_verdict_follows_it(tmp_path, pictures, monkeypatch, mode):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-images")
    with FakeOpenAI(judge_by_picture) as server:
        job = [
            *openai_flags(server.base_url, model="gpt-4o"),
            "--llm_prices",
            "gpt-4o=2.5:10",
            "--image_root",
            str(pictures),
            "--cache_dir",
            str(tmp_path / "cache"),
            "--llm_mode",
            mode,
            "--llm_batch_poll_s",
            "0.01",
        ]
        main.run([*job, "--output", str(tmp_path / "out")])
        bodies = (
            list(server.requests)
            if mode == "online"
            else [
                json.loads(line)["body"]
                for f in server.files.values()
                if f["purpose"] == "batch"
                for line in f["data"].splitlines()
            ]
        )
        paid = len(server.requests) + len(server.files)
        main.run([*job, "--output", str(tmp_path / "again")])
        assert (
            len(server.requests) + len(server.files) == paid
        )  # a rerun pays nothing: the picture's key is its file's hash
    assert bodies
    for body in bodies:
        judge = body["response_format"]["json_schema"]["name"] in JUDGES
        assert parts(body).count("image_url") == (1 if judge else 0)
    out = str(tmp_path / "out")
    instructions, rejected, stats = read_jsonl(out, "instructions"), read_jsonl(out, "rejected"), read_stats(out)
    assert stats["accounting"]["identity_holds"]
    assert instructions and all(r["image_id"] != "3" for r in instructions if r["source"] == "visual_genome")
    red = [r for r in rejected if r["source"] == "visual_genome" and r["image_id"] == "3"]
    assert (
        red
        and {r["reason"] for r in red} == {"verify_rejected"}
        and all("mean colour 220" in r["evidence"] for r in red)
    )
    assert all(set(r["image_stages"]) >= {"verify"} for r in instructions)
    verify = stats["llm"]["verify"]
    assert verify["images"] == verify["requests"] and verify["image_tokens"] == 85 * verify["images"]
    assert verify["prompt_tokens"] == (11 + 85) * verify["requests"]  # the endpoint bills the picture in prompt tokens
    assert verify["cost"] == pytest.approx(
        (verify["prompt_tokens"] * 2.5 + verify["completion_tokens"] * 10) / 1e6 * (0.5 if mode == "batch" else 1)
    )
    assert "images" not in stats["llm"]["generate"]


def test_all_stages_can_see_the_picture(tmp_path, pictures):
    main.run(["--image_root", str(pictures), "--llm_image_stages", "all", "--output", str(tmp_path / "out")])
    instructions = read_jsonl(str(tmp_path / "out"), "instructions")
    assert {s for r in instructions for s in r["image_stages"]} == {
        "generate",
        "complicate",
        "verify",
        "verify_reformulated",
        "reformulate",
    }
    assert read_stats(str(tmp_path / "out"))["llm"]["generate"]["images"] > 0


def test_a_missing_or_broken_picture_is_a_dead_letter(tmp_path, pictures):
    (pictures / "visual_genome" / "VG_100K" / "4.jpg").unlink()
    (pictures / "visual_genome" / "VG_100K" / "5.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    main.run(["--image_root", str(pictures), "--output", str(tmp_path / "out")])
    out = str(tmp_path / "out")
    failures, instructions, stats = read_jsonl(out, "failures"), read_jsonl(out, "instructions"), read_stats(out)
    lost = [f for f in failures if f["reason"] == "verify_image_missing"]
    assert {f["image_id"] for f in lost} == {"4", "5"} and all(
        f["item_id"] and f["source"] == "visual_genome" for f in lost
    )
    assert any("cannot read" in f["detail"] for f in lost) and any(
        "UnidentifiedImageError" in f["detail"] for f in lost
    )
    assert not [r for r in instructions if r["source"] == "visual_genome" and r["image_id"] in ("4", "5")]
    assert stats["accounting"]["identity_holds"]
