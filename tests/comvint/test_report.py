"""The report's pure parts: the sample's shape, chart data, the page, and the end-of-run summary."""

from __future__ import annotations

import json
import re

from comvint import stats as run_stats
from comvint.records import Failure
from comvint.report import page, sample
from comvint.summary import format_summary

FLICKR = {
    "image_id": "7",
    "source": "flickr30k_entities",
    "width": 500,
    "height": 375,
    "image": "flickr30k-images/7.jpg",
    "captions": [
        {
            "text": "A cook and a dog",
            "phrases": [
                {"text": "A cook", "entity_id": "1", "types": ["people"], "first_word_index": 0},
                {"text": "the cook", "entity_id": "1", "types": ["people"], "first_word_index": 3},
                {"text": "a dog", "entity_id": "2", "types": ["animals"], "first_word_index": 3},
            ],
        }
    ],
    "entities": [
        {"entity_id": "1", "boxes": [[1, 2, 30, 40], [50, 60, 70, 80]], "scene": False, "no_box": False},
        {"entity_id": "2", "boxes": [[5, 5, 9, 9]], "scene": False, "no_box": False},
    ],
    "regions": [],
}
VG = {
    "image_id": "3",
    "source": "visual_genome",
    "width": None,
    "height": None,
    "image": "vg/3.jpg",
    "captions": [],
    "entities": [],
    "regions": [{"region_id": "11", "phrase": "a red car", "box": [0, 0, 10, 20]}],
}


def test_geometry_keeps_every_box_with_its_label():
    geo = sample.geometry(FLICKR)
    assert geo["unit"] == "flickr30k_entities/7" and (geo["width"], geo["height"]) == (500, 375)
    assert geo["boxes"] == [
        {"id": "e:1", "label": "A cook", "box": [1, 2, 30, 40]},
        {"id": "e:1", "label": "A cook", "box": [50, 60, 70, 80]},
        {"id": "e:2", "label": "a dog", "box": [5, 5, 9, 9]},
    ]
    assert sample.geometry(VG)["boxes"] == [{"id": "r:11", "label": "a red car", "box": [0, 0, 10, 20]}]
    many = {**VG, "regions": [{"region_id": str(k), "phrase": "x", "box": [0, 0, 1, 1]} for k in range(250)]}
    assert len(sample.geometry(many)["boxes"]) == sample.MAX_BOXES


def test_grounded_ids_from_clauses_and_plain_ids():
    assert sample.grounded_ids(
        ["larger(e:1,e:2)", "not left_of(e:2,e:1)", "fact(r:1386,bicycle,used_for)", "count(e:4)=2"]
    ) == ["e:1", "e:2", "r:1386", "e:4"]
    assert sample.grounded_ids(["e:255542", "r:9"]) == ["e:255542", "r:9"]
    assert sample.grounded_ids(None) == []


def test_cards_of_each_sink():
    kept = {
        "id": "a",
        "parent_id": None,
        "family": "cross_modal",
        "format": "open_ended",
        "round": 0,
        "instruction": "Q?",
        "answer": "A",
        "verification": {"passed": True, "evidence": "x" * 700},
        "grounding": ["larger(e:1,e:2)"],
        "source": "flickr30k_entities",
        "image_id": "7",
    }
    card = sample.card(kept, "instructions")
    assert card["outcome"] == "kept" and card["verified"] is True and card["ids"] == ["e:1", "e:2"]
    assert len(card["evidence"]) == sample.MAX_TEXT + 1 and "parent_id" not in card
    unused = {
        "image_id": "7",
        "source": "flickr30k_entities",
        "family": "cross_modal",
        "stage": "filter",
        "reason": "filter_short_captions",
        "round": None,
    }
    assert sample.card(unused, "rejected") == {
        "family": "cross_modal",
        "reason": "filter_short_captions",
        "stage": "filter",
        "outcome": "rejected",
        "id": "flickr30k_entities/7/filter",
        "ids": [],
    }
    failed = sample.card(
        Failure("verify", "verify_exhausted_retries", "visual_genome", image_id="3", item_id="b", detail="429"),
        "failures",
    )
    assert (failed["outcome"], failed["id"], failed["reason"], failed["evidence"]) == (
        "failed",
        "b",
        "verify_exhausted_retries",
        "429",
    )


def test_funnel_interleaves_rounds_in_method_order():
    counts = {
        "funnel": {
            "step": {
                "after_dedup": 5,
                "verified_round_1": 3,
                "complicated_round_1": 4,
                "images": 9,
                "synthesized": 8,
                "verified_round_0": 7,
                "reformulated": 6,
                "after_filters": 6,
                "images_used": 8,
            }
        }
    }
    assert [label for label, _ in page.funnel(counts)] == [
        "images read",
        "images used",
        "synthesized",
        "verified, round 0",
        "complicated, round 1",
        "verified, round 1",
        "reformulated (Bool + MC)",
        "after quality filters",
        "kept (after dedup)",
    ]


def test_charts_leave_out_what_has_no_data():
    stats = {
        "counts": {
            "instructions": {
                "answer_index": {"0": 2, "3": 1},
                "family+format+round": {"cross_modal:bool:0": 2, "cross_modal:open_ended:0": 1},
            }
        },
        "rates": {"verification_pass_rate": {"0": 0.5, "1": None}},
    }
    charts = {c["id"]: c for c in page.charts(stats)}
    assert set(charts) == {"pass_rate", "mix", "positions"}
    assert charts["positions"]["rows"] == [["A", 2], ["D", 1]] and charts["pass_rate"]["rows"] == [["round 0", 0.5]]
    assert charts["mix"]["rows"] == [{"label": "cross_modal, round 0", "parts": {"bool": 2, "open_ended": 1}}]
    assert charts["mix"]["keys"] == ["open_ended", "bool"]


def test_cards_are_capped_per_outcome_deterministically():
    entries = [
        {
            "unit": f"u{k}",
            "records": [
                {"id": f"k{k}", "outcome": "kept"},
                {"id": f"r{k}", "outcome": "rejected", "reason": "verify_rejected"},
            ],
        }
        for k in range(50)
    ]
    shown = page.cap_cards(entries, per_outcome=10)
    assert len(shown) == 20 and len([s for s in shown if s.startswith("k")]) == 10
    assert shown == page.cap_cards(list(reversed(entries)), per_outcome=10)


def test_page_embeds_data_that_cannot_close_its_script():
    stats = {"counts": {"instructions": {"total": 1}}, "accounting": {"inputs": 1, "identity_holds": True}, "llm": {}}
    entry = {
        **sample.geometry(FLICKR),
        "records": [{"id": "x", "outcome": "kept", "instruction": "</script><b>hi</b>"}],
    }
    html = page.render(page.page_data(stats, [entry], {}, "out"))
    embedded = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S).group(1)
    data = json.loads(embedded)
    assert (
        data["images"][0]["records"][0]["instruction"] == "</script><b>hi</b>"
        and data["images"][0]["records"][0]["card"]
    )
    assert "default-src 'none'" in html and "__DATA__" not in html and "/*SCRIPT*/" not in html
    assert data["overview"]["cost"] is None  # no prices given: no cost, not $0


def test_joint_dimensions_are_counted():
    record = {"stage": "verify", "reason": "verify_rejected", "family": "cross_modal", "format": "bool", "round": 1}
    assert "rejected/stage+reason/verify:verify_rejected" in run_stats.stat_keys("rejected", record)
    kept = {"source": "s", "family": "cross_modal", "format": "bool", "round": 0, "knowledge_topic": None}
    keys = run_stats.stat_keys("instructions", kept)
    assert "instructions/family+format+round/cross_modal:bool:0" in keys and not any(
        "knowledge_topic" in k for k in keys
    )


def test_item_ends_and_problems():
    verify_failed = Failure("verify", "verify_exhausted_retries", "visual_genome", image_id="3", item_id="i1")
    complicate_failed = Failure(
        "complicate", "complicate_exhausted_retries", "visual_genome", image_id="3", item_id="i1"
    )
    assert run_stats.item_ends("failures", verify_failed) == [("i1", "failures")]
    assert (
        run_stats.item_ends("failures", complicate_failed) == []
    )  # a child that was never made; its parent ends elsewhere
    assert run_stats.item_ends("rejected", {"id": "i2", "stage": "dedup"}) == [("i2", "rejected")]
    assert run_stats.item_ends("rejected", {"image_id": "3", "stage": "filter"}) == []  # an image, not an item
    assert [
        run_stats.item_problem(c, e) for c, e in [(True, ["a"]), (True, []), (True, ["a", "b"]), (False, ["a"])]
    ] == [None, "missing", "in_two_places", "never_created"]
    section = run_stats.item_accounting(10, [("missing", 2)], [("missing", ["z", "y"])])
    assert section == {
        "created": 10,
        "missing": 2,
        "in_two_places": 0,
        "never_created": 0,
        "examples": {"missing": ["y", "z"]},
        "identity_holds": False,
    }


def test_summary_names_every_section():
    stats = {
        "llm_backend": "openai",
        "stages": "all",
        "accounting": {"inputs": 12, "identity_holds": True},
        "counts": {
            "instructions": {
                "total": 3,
                "family+format+round": {"cross_modal:bool:0": 2, "cross_modal:open_ended:1": 1},
            },
            "rejected": {"total": 2, "stage": {"verify": 2}, "reason": {"verify_rejected": 2}},
            "failures": {"total": 1, "reason": {"generate_exhausted_retries": 1}},
        },
        "llm": {
            "generate": {"calls": 4, "cache_hits": 1, "requests": 5, "retries": {"rate_limited": 2}, "cost": 0.125}
        },
    }
    text = format_summary(
        stats, [("instructions/", "out/instructions (1 file)"), ("report.html", "out/report.html")], 12.34
    )
    lines = text.splitlines()
    assert lines[0] == "ComVint run finished in 12.3 s (openai LLM backend, stages: all)"
    assert "12 images and files; accounting identity holds" in lines[1]
    assert re.search(r"cross_modal\s+1\s+2\s+0\s+3$", text, re.M)
    assert "by stage verify 2" in text and "generate_exhausted_retries 1" in text
    assert re.search(r"generate\s+4\s+1\s+5\s+2\s+0\s+0\s+0\s+\$0\.1250$", text, re.M)
    assert lines[-1].split() == ["report.html", "out/report.html"]
    batch = {
        **stats,
        "llm_mode": "batch",
        "llm": {"generate": {**stats["llm"]["generate"], "batches": 2, "batch_lines": 5}},
    }
    text = format_summary(batch, [], 1.0)
    assert "LLM use (Batch API; costs with its discount)" in text
    assert re.search(r"stage\s+calls\s+cache hits\s+batches\s+batch lines\s+retries", text)
    assert re.search(r"generate\s+4\s+1\s+2\s+5\s+2\s+0", text, re.M)
    broken = {**stats, "accounting": {"inputs": 12, "identity_holds": False}}
    assert "accounting identity BROKEN" in format_summary(broken, [], 1.0)


def test_llm_rows_show_batches_and_lines_in_batch_mode_only():
    usage = {"generate": {"calls": 4, "requests": 4, "batches": 1, "batch_lines": 4}}
    (online,) = page.llm_rows({"llm_mode": "online", "llm": usage})
    (batch,) = page.llm_rows({"llm_mode": "batch", "llm": usage})
    assert "batches" not in online and (batch["batches"], batch["batch_lines"]) == (1, 4)


def test_a_visual_genome_image_draws_its_objects_which_the_questions_name():
    vg = {
        **VG,
        "objects": [
            {"object_id": "7", "names": ["car"], "synsets": ["car.n.01"], "box": [1, 2, 11, 22], "merged_ids": []}
        ],
    }
    assert [b["id"] for b in sample.geometry(vg)["boxes"]] == ["o:7", "r:11"]
    assert sample.grounded_ids(["left_of(o:7,o:9)", "not colour(o:7,red)", "above(r:11,e:2)"]) == [
        "o:7",
        "o:9",
        "r:11",
        "e:2",
    ]
