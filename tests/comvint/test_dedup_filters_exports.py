"""Dedup decisions, quality filters and export converters, without Beam."""

from __future__ import annotations

import random

import pytest

from comvint import dedup, exports, filters


def item(
    id_: str, text: str, unit: str = "img:1", answer: str = "yes", fmt: str = "open_ended", round_: int = 0, parent=None
):
    return {
        "id": id_,
        "parent_id": parent,
        "format": fmt,
        "round": round_,
        "unit": unit,
        "text": dedup.normalise(text),
        "answer": dedup.normalise(answer),
    }


def test_normalise_shingles_jaccard():
    assert dedup.normalise("  Is the MAN, on the left?! ") == "is the man on the left"
    a, b = dedup.shingles("What is the man holding?"), dedup.shingles("what is the man holding")
    assert a == b and dedup.jaccard(a, b) == 1.0
    assert dedup.jaccard(a, dedup.shingles("Where does the red bus go?")) < 0.2
    assert dedup.shingles("hi") == dedup.shingles("HI!")


def test_minhash_estimates_jaccard_and_is_deterministic():
    hasher = dedup.MinHasher(num_perm=256, bands=32)
    x, y = (
        dedup.shingles("is the woman in the red dress left of the man"),
        dedup.shingles("is the woman in the red dress right of the man"),
    )
    sx, sy = hasher.signature(x), hasher.signature(y)
    assert abs(float((sx == sy).mean()) - dedup.jaccard(x, y)) < 0.1
    assert (dedup.MinHasher(256, 32).signature(x) == sx).all()
    keys = dedup.MinHasher().band_keys(dedup.MinHasher().signature(x))
    assert len(keys) == dedup.BANDS and keys == dedup.MinHasher().band_keys(dedup.MinHasher().signature(x))
    assert dedup.candidate_probability(dedup.THRESHOLD) >= 0.95 and dedup.candidate_probability(0.3) < 0.15
    with pytest.raises(ValueError):
        dedup.MinHasher(num_perm=10, bands=3)


def test_within_image_exact_near_and_legal_pairs():
    items = [
        item("a", "What is the man holding?", answer="a red umbrella"),
        item("b", "what is the man holding", answer="A red umbrella."),  # exact (after normalising)
        item("c", "What is the man holding here?", answer="a red umbrella"),  # near, same answer
        item("d", "Is the cook larger than the child?", answer="yes"),
        item("e", "Is the child larger than the cook?", answer="no"),  # near text, other answer: contrastive, kept
        item("f", "Is the cook larger than the child?", fmt="bool", parent="d", answer="yes"),  # d's reformulation
        item(
            "g",
            "Is the cook larger than the child? Also, what is left of him?",
            round_=1,
            parent="d",
            answer="yes, a dog",
        ),
    ]
    decisions = {i["id"]: (reason, of) for i, reason, of in dedup.dedup_image(items)}
    assert decisions == {
        "a": (None, None),
        "b": ("duplicate_exact", "a"),
        "c": ("duplicate_near", "a"),
        "d": (None, None),
        "e": (None, None),
        "f": (None, None),
        "g": (None, None),
    }


def test_reformulations_of_one_question_are_not_duplicates():
    yes = item("y", "Is the dog right of the man?", fmt="bool", parent="p", answer="yes")
    no = item("n", "Is the dog right of the man?", fmt="bool", parent="p", answer="no")
    mc = item("m", "Where is the dog?", fmt="multiple_choice", parent="p", answer="right of the man")
    assert [r for _, r, _ in dedup.dedup_image([yes, no, mc])] == [None, None, None]
    other = item("o", "Is the dog right of the man?", fmt="bool", parent="q", answer="yes")  # another lineage
    assert {i["id"]: r for i, r, _ in dedup.dedup_image([yes, no, other])}["o"] == "duplicate_exact"


def test_survivor_is_deterministic_whatever_the_input_order():
    items = [item(f"id{k}", "What colour is the bus?", round_=k % 3, answer="red") for k in range(8)]
    outcomes = set()
    for seed in range(5):
        shuffled = items[:]
        random.Random(seed).shuffle(shuffled)
        outcomes.add(tuple(sorted((i["id"], r, of) for i, r, of in dedup.dedup_image(shuffled))))
    (only,) = outcomes
    assert [i for i, r, _ in only if r is None] == ["id0"]  # round 0, smallest id


def test_exact_groups_head_and_members():
    same = [dedup.member(item(f"q{k}", "What is the man doing?", unit=f"img:{k}", round_=k % 2)) for k in range(5)]
    head, keys = dedup.exact_groups(same[::-1])
    assert head == (0, 0, "q0", "img:0", "what is the man doing yes")  # question and answer
    assert keys == [(0, 0, "q0"), (0, 0, "q2"), (0, 0, "q4"), (1, 0, "q1"), (1, 0, "q3")]


def test_bucket_pairs_are_verified_and_cross_image():
    run = "He is running along the beach."  # one answer: the questions decide
    a, b = (
        item("a", "What is the man doing?", unit="img:1", answer=run),
        item("b", "What is the man doing here?", unit="img:1", answer=run),
    )
    c, d = (
        item("c", "What is the man doing here?", unit="img:2", answer=run),
        item("d", "Why is the bus red?", unit="img:3", answer=run),
    )
    a, b, c, d = map(dedup.member, (a, b, c, d))
    assert dedup.bucket_pairs([a], 0.7) == []
    assert dedup.bucket_pairs([d, c, b, a], 0.7) == [("a", "c"), ("b", "c")]  # no same-image pair, d matches none
    crowd = [dedup.member(item(f"x{k:03d}", "What is the man doing?", unit=f"img:{k}")) for k in range(100)]
    assert len(dedup.bucket_pairs(crowd, 0.7, max_compare=5)) == 5 * 100 - 15  # bounded work in a crowded bucket


def test_band_entries_meet_under_shuffle_keys_and_pair_up():
    texts = {
        "a": ("What is the man doing?", "img:1"),
        "b": ("What is the man doing here?", "img:1"),
        "c": ("What is the man doing here?", "img:2"),
        "d": ("Why is the bus red?", "img:3"),
    }
    hasher = dedup.MinHasher()
    groups: dict[int, list[bytes]] = {}
    for name, (text, unit) in texts.items():
        sketch = hasher.sketch(dedup.member(item(name, text, unit=unit, answer="He is running along the beach.")))
        entries = dedup.band_entries(sketch, range(dedup.BANDS))
        assert [band for band, _, _ in entries] == list(range(dedup.BANDS))
        assert dedup.band_entries(sketch, [3, 7]) == [entries[3], entries[7]]
        assert all(0 <= key < 1 << dedup.SPREAD_BITS for _, key, _ in entries)
        for band, key, entry in entries:
            groups.setdefault((band, key), []).append(entry)
    pairs = [pair for entries in groups.values() for pair in dedup.group_pairs(entries, 0.7)]
    assert set(pairs) == {("a", "c"), ("b", "c")}  # verified, cross-image only, whichever band brought them together


def test_band_waves_cover_every_band_once():
    assert dedup.band_waves(16, 1) == [list(range(16))]
    assert dedup.band_waves(16, 16) == [[b] for b in range(16)]
    assert dedup.band_waves(16, 0) == [list(range(16))] and dedup.band_waves(4, 99) == [[0], [1], [2], [3]]
    waves = dedup.band_waves(16, 3)
    assert len(waves) == 3 and sorted(b for w in waves for b in w) == list(range(16))


def test_gram_jaccard_agrees_with_shingle_jaccard():
    x, y = "is the woman in the red dress left of the man", "is the woman in the red dress right of the man"
    assert dedup.jaccard(dedup.grams(x), dedup.grams(y)) == dedup.jaccard(dedup.shingles(x), dedup.shingles(y))
    assert dedup.grams("hi") == frozenset([b"hi"])


def test_union_find_gives_exact_components_of_any_length():
    chain = [f"n{k:04d}" for k in range(1000)]  # longer than any fixed number of propagation rounds
    edges = [(chain[k + 1], chain[k]) for k in range(len(chain) - 1)] + [("x2", "x1"), ("x1", "x2")]  # repeated edge
    random.Random(1).shuffle(edges)
    halves = [{}, {}]
    for k, (a, b) in enumerate(edges):
        dedup.union(halves[k % 2], a, b)
    roots = dedup.component_roots(dedup.merge_components(*halves))  # as a combiner merges two workers' forests
    assert {roots[n] for n in chain} == {"n0000"} and roots["x2"] == roots["x1"] == "x1" and len(roots) == 1002


def test_cluster_cap_per_leader():
    keys = [(k % 2, 0, f"q{k}") for k in range(6)]
    same = ("what is the man doing he is surfing", keys)
    decisions = dedup.cap_cluster([same], keep=3)
    assert [d for d in decisions if d[1]] == [
        ("q1", "template_repeat", "q0"),
        ("q3", "template_repeat", "q0"),
        ("q5", "template_repeat", "q0"),
    ]
    assert dedup.cap_cluster([("what is the man doing he is surfing", keys[:3])], keep=3) == [
        (f"q{k}", None, "q0") for k in (0, 2, 1)
    ]


def test_cluster_cap_follows_leaders_not_chains():
    """a ~ b ~ c, but a !~ c: one component, two leaders (a and c), each capped on its own."""
    a, b, c = (
        "what is the man doing on the beach he is surfing",
        "what is the man doing on the beach here he is surfing",
        "what is the man doing on the beach here he is sitting",
    )
    assert dedup.jaccard(dedup.grams(a), dedup.grams(b)) >= 0.7 and dedup.jaccard(dedup.grams(b), dedup.grams(c)) >= 0.7
    assert dedup.jaccard(dedup.grams(a), dedup.grams(c)) < 0.7
    groups = [(a, [(0, 0, "a0"), (0, 0, "a1")]), (b, [(0, 0, "b0")]), (c, [(0, 0, "c0"), (1, 0, "c1")])]
    assert dedup.cap_cluster(groups, keep=2) == [
        ("a0", None, "a0"),
        ("a1", None, "a0"),
        ("b0", "template_repeat", "a0"),
        ("c0", None, "c0"),
        ("c1", None, "c0"),
    ]


def test_canonical_image_matches_visual_genome_to_flickr():
    assert (
        dedup.canonical_image({"source": "visual_genome", "image_id": "2", "flickr_id": "900004"})
        == "flickr30k_entities/900004"
    )
    assert dedup.canonical_image({"source": "flickr30k_entities", "image_id": "900004"}) == "flickr30k_entities/900004"
    assert dedup.canonical_image({"source": "visual_genome", "image_id": "3", "flickr_id": None}) == "visual_genome/3"


GOOD = {"instruction": "What is the man holding?", "answer": "A red umbrella.", "format": "open_ended"}
MC = {
    "instruction": "Which colour?",
    "format": "multiple_choice",
    "options": ["red", "blue", "green", "white"],
    "answer_index": 1,
    "answer": "blue",
}


@pytest.mark.parametrize(
    "record, reason",
    [
        (GOOD, None),
        ({**GOOD, "instruction": "  "}, "quality_empty_instruction"),
        ({**GOOD, "answer": ""}, "quality_empty_answer"),
        ({**GOOD, "instruction": "Why? " * 200}, "quality_long_instruction"),
        ({**GOOD, "answer": "Because. " * 200}, "quality_long_answer"),
        ({**GOOD, "answer": "The man at [23, 62, 208, 500] holds it."}, "quality_leaks_coordinates"),
        ({**GOOD, "answer": "The umbrella is at X: 10 Y: 20."}, "quality_leaks_coordinates"),
        ({**GOOD, "answer": "e:255542 holds it."}, "quality_leaks_coordinates"),
        ({**GOOD, "instruction": "According to the caption, what is the man holding?"}, "quality_mentions_annotations"),
        ({**GOOD, "answer": "The annotations do not say."}, "quality_mentions_annotations"),
        ({**GOOD, "answer": "The caption says he holds a cup."}, "quality_mentions_annotations"),
        ({**GOOD, "instruction": "In the given captions, who holds the cup?"}, "quality_mentions_annotations"),
        ({**GOOD, "instruction": "Which bounding box holds the cup?"}, "quality_mentions_annotations"),
        ({**GOOD, "instruction": "What do the captions on the subtitles say?"}, None),  # captions in the picture
        ({**GOOD, "instruction": "Is the caption under the painting written in French?"}, None),
        (MC, None),
        ({**MC, "options": ["red", "Blue", "blue", "white"]}, "quality_mc_repeated_options"),
        ({**MC, "options": ["red", "blue", "green"]}, "quality_mc_repeated_options"),
        ({**MC, "answer": "purple"}, "quality_mc_answer_not_in_options"),
        ({**MC, "answer_index": 7}, "quality_mc_answer_not_in_options"),
        ({**GOOD, "format": "bool", "answer": "yes"}, None),
        ({**GOOD, "format": "bool", "answer": "Yes, it is."}, "quality_bool_not_yes_no"),
    ],
)
def test_quality_filters(record, reason):
    assert filters.check(record) == reason


def test_filter_thresholds_are_configurable():
    assert (
        filters.check({**GOOD, "answer": "x" * 50}, filters.FilterConfig(max_answer_chars=40)) == "quality_long_answer"
    )


RECORD = {
    "id": "i1",
    "image": "flickr30k-images/1.jpg",
    "instruction": "Which colour is the bus?",
    "format": "multiple_choice",
    "options": ["red", "blue", "green", "white"],
    "answer_index": 2,
    "answer": "green",
}


def test_llava_messages_and_trl_conversions():
    llava = exports.to_llava(RECORD)
    assert llava["conversations"][0] == {
        "from": "human",
        "value": "<image>\nWhich colour is the bus?\nA. red\nB. blue\nC. green\nD. white\n"
        "Answer with the option's letter from the given choices directly.",
    }
    assert llava["conversations"][1] == {"from": "gpt", "value": "C"} and llava["image"] == RECORD["image"]
    msgs = exports.to_messages({**RECORD, "format": "bool", "answer": "no"})
    assert msgs == {
        "id": "i1",
        "messages": [
            {
                "role": "user",
                "content": "<image>Which colour is the bus?\nAnswer the question using a single word or phrase.",
            },
            {"role": "assistant", "content": "No"},
        ],
        "images": ["flickr30k-images/1.jpg"],
    }
    trl = exports.to_trl({**RECORD, "format": "bool", "answer": "no"})
    assert trl == {
        "id": "i1",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image"},
                    {
                        "type": "text",
                        "text": "Which colour is the bus?\nAnswer the question using a single word or phrase.",
                    },
                ],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "No"}]},
        ],
        "images": ["flickr30k-images/1.jpg"],
    }
    assert exports.answer_text({**RECORD, "format": "open_ended", "answer": "Green."}) == "Green."


def test_a_review_task_shows_the_question_as_asked_and_finds_the_picture():
    item = {
        **RECORD,
        "image_id": "1",
        "source": "flickr30k_entities",
        "family": "cross_modal",
        "round": 1,
        "parent_id": "p0",
        "verification": {"passed": True, "evidence": "left_of(e:1,e:2) -> ok", "inherited_from": "i0"},
    }
    task = exports.to_review_task(item, "gs://bucket/images/")
    assert task["data"]["image"] == "gs://bucket/images/flickr30k-images/1.jpg"  # Label Studio presigns cloud URLs
    assert (
        task["data"]["question"] == "Which colour is the bus?\nA. red\nB. blue\nC. green\nD. white"
    )  # no training hint
    assert task["data"]["answer"] == "C. green" and task["data"]["verdict"] == "passed"
    assert task["meta"] == {
        "id": "i1",
        "parent_id": "p0",
        "image_id": "1",
        "source": "flickr30k_entities",
        "inherited_from": "i0",
    }
    local = exports.to_review_task({**item, "verification": None, "format": "bool", "answer": "no"}, "/data/images")
    assert local["data"]["image"] == "/data/local-files/?d=flickr30k-images/1.jpg"
    assert (local["data"]["answer"], local["data"]["verdict"]) == ("No", "not judged")


def test_rejected_rows_of_items_and_of_whole_images_share_one_parquet_schema():
    pa = pytest.importorskip("pyarrow")
    image_level = {
        "image_id": "9",
        "source": "flickr30k_entities",
        "family": "cross_modal",
        "stage": "filter",
        "reason": "filter_short_captions",
        "round": None,
    }
    item_level = {
        **RECORD,
        "image_id": "1",
        "source": "flickr30k_entities",
        "family": "cross_modal",
        "round": 0,
        "llm": {"backend": "offline", "model": "offline", "prompt_version": "v"},
        "grounding": ["g"],
        "stage": "dedup",
        "reason": "duplicate_near",
        "evidence": "duplicate of i0",
        "duplicate_of": "i0",
    }
    rows = [exports.to_rejected_row(r) for r in (image_level, item_level)]
    table = pa.Table.from_pylist(rows, schema=exports.rejected_arrow_schema())
    assert table.column("reason").to_pylist() == ["filter_short_captions", "duplicate_near"]
    assert table.column("id").to_pylist() == [None, "i1"] and table.column("grounding").to_pylist() == [None, ["g"]]
    assert table.column("duplicate_of").to_pylist() == [None, "i0"]
