"""Record serialisation."""

from __future__ import annotations

import json

from comvint.records import Failure, to_json_line


def test_json_lines_round_trip_including_what_orjson_refuses():
    record = {"text": "café «quoted» \n", "n": [1, None, 2.5], "big": 2**70}
    assert json.loads(to_json_line(record)) == record
    failure = Failure("ingest", "ingest_bad_box", "flickr30k_entities", image_id="1", detail="x")
    assert json.loads(to_json_line(failure)) == failure.to_dict()
    assert "\n" not in to_json_line(record)


def test_packed_records_and_text_round_trip_smaller_than_their_pickle():
    import pickle

    from comvint.records import pack, pack_text, unpack, unpack_text

    item = {
        "id": "0123456789abcdef0123",
        "instruction": "Which is further to the left: the man or the dog?",
        "answer": "The man.",
        "verification": {"passed": None, "inherited_from": "x"},
        "grounding": ["left_of(e:1,e:2)"],
        "round": 2,
        "n": 2**70,
    }
    assert unpack(pack(item)) == item
    assert len(pack(item)) < len(pickle.dumps(item, pickle.HIGHEST_PROTOCOL)) / 2  # the preset dictionary at work
    line = to_json_line({**item, "text": "café «quoted»"}).encode()
    assert unpack_text(pack_text(line)) == line and len(pack_text(line)) < len(line) / 2
    assert unpack_text(pack_text(b"")) == b""
