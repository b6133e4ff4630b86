"""report.html of the bundled-sample run: its sample, its rebuild, the end-of-run summary, and a real browser."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import struct
import sys
import zlib

import pytest
import yaml
from datasets import load_dataset

from beam_pipeline import dedup as beam_dedup
from beam_pipeline import main, report
from comvint.report import sample
from comvint.stats import unit_of
from tests.beam_pipeline.helpers import read_jsonl

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def png(width: int, height: int) -> bytes:
    """A valid grey PNG (no imaging library needed)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = b"".join(b"\x00" + b"\x99" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("report")
    pictures, vg_pictures = root / "images" / "flickr30k-images", root / "images" / "visual_genome" / "VG_100K"
    pictures.mkdir(parents=True)
    vg_pictures.mkdir(parents=True)
    for k in range(1, 8):
        (pictures / f"90000{k}.jpg").write_bytes(png(50, 37))  # a PNG under a .jpg name, as happens
    for k in range(1, 6):  # image 6 has no picture: its judge calls are dead letters, never text-only calls
        (vg_pictures / f"{k}.jpg").write_bytes(png(40, 30))
    main.run(
        [
            "--output",
            str(root / "out"),
            "--image_root",
            str(root / "images"),
            "--report_images_per_source",
            "3",
            "--reformulate_share",
            "1",
        ]
    )  # every open item reformulated: every format and round among the report's few images
    return root / "out"


def _page_data(html: str) -> dict:
    return json.loads(re.search(r'id="report-data">(.*?)</script>', html, re.S).group(1).replace("<\\/", "</"))


def test_sample_holds_every_record_of_its_images(run):
    out = str(run)
    entries = read_jsonl(out, "report_sample")
    assert {e["source"] for e in entries} == {"flickr30k_entities", "visual_genome"}
    assert all(sum(e["source"] == s for e in entries) <= 3 for s in ("flickr30k_entities", "visual_genome"))
    expected: dict[str, set[str]] = {}
    for sink in ("instructions", "rejected", "failures"):
        for record in read_jsonl(out, sink):
            expected.setdefault(unit_of(record), set()).add(sample.card(record, sink)["id"])
    for entry in entries:
        ids = {r["id"] for r in entry["records"]}
        assert ids == expected[entry["unit"]]
        assert all(r["parent_id"] in ids for r in entry["records"] if "parent_id" in r)  # lineages are whole
        assert entry["boxes"] and all(len(b["box"]) == 4 for b in entry["boxes"])


def test_report_embeds_the_picture_and_rebuilds_identically(run, tmp_path):
    html = (run / "report.html").read_text(encoding="utf-8")
    data = _page_data(html)
    pictured = {i["unit"]: i["picture"] for i in data["images"] if i["picture"]}
    assert set(pictured) == {i["unit"] for i in data["images"] if i["unit"] != "visual_genome/6"} != set()
    assert all(p.startswith("data:image/png;base64,") for p in pictured.values())
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / "report.html").unlink()
    report.main([str(copy), "--image_root", str(run.parent / "images")])
    rebuilt = _page_data((copy / "report.html").read_text(encoding="utf-8"))
    assert {k: v for k, v in rebuilt.items() if k != "source"} == {k: v for k, v in data.items() if k != "source"}
    assert len(html) < 2_000_000


def test_the_dataset_card_describes_the_run_and_loads_with_datasets(run, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    text = (run / "README.md").read_text()
    head, body = text.split("---\n")[1], text.split("---\n", 2)[2]
    meta = yaml.safe_load(head)
    stats = json.loads((run / "stats.json").read_text())
    assert (
        meta["license"] == "other" and "Visual Genome" in meta["license_details"]
    )  # Flickr30k Entities: non-commercial
    assert meta["size_categories"] == ["n<1K"] and "visual-question-answering" in meta["task_categories"]
    assert f"Kept: **{stats['counts']['instructions']['total']}** instructions" in body
    assert all(f"| {reason} | {n} |" in body for reason, n in stats["counts"]["rejected"]["stage+reason"].items())
    assert "@article{du2023makes" in body and "offline engine" in body
    loaded = load_dataset(str(run), split="train", cache_dir=str(tmp_path / "hf"))
    assert sorted(loaded["id"]) == sorted(r["id"] for r in read_jsonl(str(run), "instructions"))
    dropped = load_dataset(str(run), "rejected", split="train", cache_dir=str(tmp_path / "hf"))
    assert sorted(dropped["reason"]) == sorted(r["reason"] for r in read_jsonl(str(run), "rejected"))


def test_main_prints_the_summary(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["comvint", "--output", str(tmp_path)])
    main.main()
    out = capsys.readouterr().out
    assert out.startswith('{"state": "DONE"}\nComVint run finished in ') and "accounting identity holds" in out
    assert re.search(r"^  report.html\s+" + re.escape(str(tmp_path / "report.html")) + "$", out, re.M)
    assert re.search(r"^Failures\s+1: ingest_box_outside_image 1$", out, re.M)
    assert out.rstrip().splitlines()[-1].split()[0] == "README.md"  # the summary's list of outputs is the last word


def test_main_exits_nonzero_in_one_line_when_accounting_breaks(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(beam_dedup, "_apply", lambda joined: [])  # a bug that loses every instruction
    monkeypatch.setattr(sys, "argv", ["comvint", "--output", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        main.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        err[-1].startswith("ComVint run FAILED: accounting identity broken: ")
        and "inputs ended in no output" in err[-1]
    )
    assert not (tmp_path / "report.html").exists()


@pytest.fixture
def browser():
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's chromium (see .ci/run)")
        pytest.skip("no chromium on this machine")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            yield instance
        finally:
            instance.close()


def test_report_in_a_real_browser(run, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(10_000)
    problems, requests = [], []
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    url = (run / "report.html").as_uri()
    page.goto(url)
    page.wait_for_selector("article.card")
    assert problems == [] and requests == [url]

    charts = page.locator("figure.chart")
    assert charts.count() >= 8
    for k in range(charts.count()):
        widths = charts.nth(k).locator("svg rect").evaluate_all("rs => rs.map(r => r.getBBox().width)")
        assert widths and max(widths) > 0, charts.nth(k).get_attribute("data-chart")
    assert (
        page.locator("#llm-table tbody tr").count() == 5
    )  # generate, complicate, verify, reformulate, verify_reformulated

    before = page.locator("article.card").evaluate_all("cs => cs.map(c => c.dataset.id)")
    outcomes = page.locator("#filter-outcome option").evaluate_all("os => os.map(o => o.value)")
    rejected = next(o for o in outcomes if o.startswith("rejected: "))
    page.select_option("#filter-outcome", rejected)
    after = page.locator("article.card").evaluate_all("cs => cs.map(c => [c.dataset.id, c.dataset.outcome])")
    assert after and {o for _, o in after} == {rejected} and [i for i, _ in after] != before

    page.select_option("#filter-outcome", "kept")
    page.select_option("#filter-round", "2")
    page.select_option("#filter-format", "multiple_choice")
    mc = page.locator("article.card").first
    assert mc.locator("ol.options li").count() == 4 and mc.locator("ol.options li.right").count() == 1
    assert mc.locator("ol.lineage li").count() >= 3  # round 0, complication 1, complication 2 (and this one)
    assert mc.locator("svg.boxes rect[data-box]").count() > 0
    assert mc.locator("svg.boxes rect[stroke='#e0392b']").count() > 0  # the boxes it is grounded in, highlighted

    page.select_option("#filter-round", "")
    page.select_option("#filter-format", "")
    page.select_option("#filter-family", "cross_modal")
    assert page.locator("article.card svg.boxes image").count() > 0  # the picture under the boxes
    assert "saw the picture: verify" in page.locator("article.card span.badge.saw").first.inner_text()
    page.select_option("#filter-family", "")
    page.select_option("#filter-outcome", "")
    shots = pathlib.Path(os.environ.get("COMVINT_ARTIFACTS") or run.parent)
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "report.png"), full_page=True)
    assert (shots / "report.png").stat().st_size > 10_000


def test_a_batch_run_report_shows_its_batches(run, browser, tmp_path):
    copy = tmp_path / "batch"
    shutil.copytree(run, copy)
    stats = json.loads((copy / "stats.json").read_text(encoding="utf-8"))
    stats["llm_mode"] = "batch"
    stats["llm"] = {"generate": {"calls": 9, "requests": 9, "batches": 1, "batch_lines": 9, "cost": 0.5}}
    (copy / "stats.json").write_text(json.dumps(stats), encoding="utf-8")
    report.main([str(copy)])
    page = browser.new_page()
    problems = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto((copy / "report.html").as_uri())
    page.wait_for_selector("#llm-table")
    assert problems == []
    assert page.locator("#llm-table thead th").all_inner_texts()[3:5] == ["batches", "batch lines"]
    assert page.locator("#llm-table tbody td").all_inner_texts()[3:5] == ["1", "9"]
    assert "(Batch API)" in page.locator("#source").inner_text()


HOSTILE = (
    '<img src="http://127.0.0.1:9/img"> </script><script>fetch("http://127.0.0.1:9/js")</script> <!-- '
    '<a href="http://127.0.0.1:9/a">x</a> &amp; \u2028'
)


@pytest.fixture
def hostile_report(tmp_path) -> pathlib.Path:
    """A run whose captions carry markup and URLs (made before the browser's event loop starts)."""
    root = tmp_path / "flickr"
    (root / "Sentences").mkdir(parents=True)
    (root / "Annotations").mkdir()
    line = (
        f"[/EN#1/people A man {HOSTILE}] holds [/EN#2/other a red umbrella] on a long and rainy afternoon "
        "in the old town square ."
    )
    (root / "Sentences" / "42.txt").write_text("\n".join([line] * 5) + "\n")
    (root / "Annotations" / "42.xml").write_text(
        "<annotation><size><width>100</width><height>100</height></size>"
        "<object><name>1</name><bndbox><xmin>10</xmin><ymin>10</ymin><xmax>40</xmax><ymax>90</ymax></bndbox></object>"
        "<object><name>2</name><bndbox><xmin>60</xmin><ymin>5</ymin><xmax>95</xmax><ymax>40</ymax></bndbox></object></annotation>"
    )
    main.run(["--flickr_root", str(root), "--output", str(tmp_path / "out")])
    return tmp_path / "out" / "report.html"


def test_a_report_of_hostile_text_stays_text_in_a_real_browser(hostile_report, browser):
    """Markup and URLs in every text the report embeds: the page still draws, and no request leaves it."""
    page = browser.new_page()
    page.set_default_timeout(10_000)
    problems, requests = [], []
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    url = hostile_report.as_uri()
    page.goto(url)
    page.wait_for_selector("article.card")
    assert problems == [] and requests == [url]
    assert (
        page.locator("script").count() == 2 and page.locator("img, a[href]").count() == 0
    )  # nothing injected became markup
    assert "</script><script>" in page.locator("body").inner_text() or "<img" in page.content().replace("&lt;", "<")
