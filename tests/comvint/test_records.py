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
