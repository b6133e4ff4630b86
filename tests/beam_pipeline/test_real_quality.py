"""The whole job, default flags, on the real Flickr30k Entities val split and Visual Genome images 1-50: every kept
item passes the independent checker (tests/checker.py), with all formats, rounds 0-2 and varied question kinds."""

from __future__ import annotations

import collections

from beam_pipeline import main
from tests import checker
from tests.beam_pipeline.helpers import read_jsonl, read_stats
from tests.comvint.test_engine import flickr_val  # noqa: F401 - the unpacked release, a session fixture


def test_real_val_and_vg_have_no_flagged_item(flickr_val, real_samples, tmp_path):  # noqa: F811
    vg = real_samples / "visual_genome_1_50"
    out = str(tmp_path)
    main.run(
        [
            "--flickr_root",
            str(flickr_val),
            "--flickr_split",
            "val",
            "--vg_regions",
            str(vg / "region_descriptions.json"),
            "--vg_image_data",
            str(vg / "image_data.json"),
            "--output",
            out,
        ]
    )
    items, stats = read_jsonl(out, "instructions"), read_stats(out)
    assert stats["accounting"]["identity_holds"] and stats["accounting"]["inputs"] == 1050
    genome = checker.load_genome(vg)
    flagged = collections.Counter()
    for item in items:
        image = (
            checker.load_flickr(flickr_val, item["image_id"])
            if item["source"] == "flickr30k_entities"
            else genome[item["image_id"]]
        )
        flagged.update(checker.flags(item, image))
    assert not flagged, flagged
    assert len(items) >= 2 * 900 and {i["format"] for i in items} == {"open_ended", "bool", "multiple_choice"}
    assert {i["round"] for i in items} == {0, 1, 2} and {i["source"] for i in items} == {
        "flickr30k_entities",
        "visual_genome",
    }
    asked = collections.Counter(c.split("(")[0] for i in items for c in i["grounding"][-1:] if not c.startswith("not "))
    assert len(asked) >= 6 and max(asked.values()) < 0.5 * len(items)
