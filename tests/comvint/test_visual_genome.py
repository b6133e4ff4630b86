"""The streaming, splittable Visual Genome reader."""

from __future__ import annotations

import io
import json

import pytest

from comvint.readers import visual_genome as vg
from comvint.records import Failure


def _read(data: bytes, start: int = 0, end: int | None = None, image_data=None) -> list:
    return list(vg.read_images(io.BytesIO(data), "regions.json", start, end, image_data))


def _split_read(data: bytes, target: int) -> list:
    out = []
    for start, end in vg.split_ranges(len(data), target):
        out += _read(data, start, end)
    return out


def _ids(items: list) -> list:
    return [item.reason if isinstance(item, Failure) else item["image_id"] for item in items]


@pytest.fixture
def v12(real_samples) -> bytes:
    return (real_samples / "visual_genome/v1.2/region_descriptions.json").read_bytes()


def test_real_v12(v12, real_samples):
    info = vg.parse_image_data((real_samples / "visual_genome/v1.2/image_data.json").read_text())
    records = _read(v12, image_data=info)
    assert _ids(records) == ["1", "2", "3", "4", "5"]
    assert sum(len(r["regions"]) for r in records) == 1278
    first = records[0]
    assert (first["width"], first["height"], first["image"], first["vg_version"]) == (
        800,
        600,
        "visual_genome/VG_100K_2/1.jpg",
        "1.2",
    )
    assert first["regions"][1] == {
        "region_id": "1383",
        "phrase": "shade is along the street",
        "box": [194, 372, 376, 481],
    }
    assert first["coco_id"] is None and first["captions"] == [] and first["entities"] == []
    phrases = [r["phrase"] for rec in records for r in rec["regions"]]
    assert all(p == p.strip() and "\n" not in p for p in phrases)
    assert "parking meter" in phrases


def test_real_v10(real_samples):
    records = _read((real_samples / "visual_genome/v1.0/region_descriptions.json").read_bytes())
    assert _ids(records) == ["1", "2", "3", "4", "5"]
    assert records[0]["vg_version"] == "1.0"
    assert sum(len(r["regions"]) for r in records) == 1288
    assert records[0]["regions"][0] == {
        "region_id": "1382",
        "phrase": "the clock is green in colour",
        "box": [421, 57, 503, 196],
    }


@pytest.mark.parametrize("target", [1, 97, 1000, 7000, 31000, 80000, 10**7])
def test_split_reads_return_every_image_exactly_once(v12, target):
    assert _split_read(v12, target) == _read(v12)


def _synthetic(n: int, phrase: str) -> bytes:
    objs = [
        {
            "regions": [
                {"region_id": i * 10 + k, "width": 5, "height": 6, "image_id": i, "phrase": phrase, "y": 1, "x": 2}
                for k in range(3)
            ],
            "id": i,
        }
        for i in range(n)
    ]
    return json.dumps(objs, ensure_ascii=False).encode("utf-8")


@pytest.mark.parametrize("target", [1, 13, 64, 333, 1024])
def test_split_reads_with_multibyte_and_tricky_strings(target):
    data = _synthetic(40, 'café {"regions": [] } ünïcødé "quoted" \\ back\nslash')
    assert _ids(_split_read(data, target)) == [str(i) for i in range(40)]
    assert (
        _split_read(data, target)[3]["regions"][0]["phrase"] == 'café {"regions": [] } ünïcødé "quoted" \\ back slash'
    )


def _generic_only(monkeypatch) -> None:
    monkeypatch.setattr(vg, "_decode_typed", lambda window, image_data: None)


@pytest.mark.parametrize("version", ["v1.2", "v1.0"])
def test_typed_fast_path_matches_the_generic_decoder(real_samples, monkeypatch, version):
    data = (real_samples / "visual_genome" / version / "region_descriptions.json").read_bytes()
    info = {"1": {"width": 800, "height": 600, "flickr_id": 42, "coco_id": None}}
    fast = _read(data, image_data=info)
    typed = [
        vg.typed_record(vg._TYPED.decode(json.dumps(o).encode()), info.get(str(o["id"]))) for o in json.loads(data)
    ]
    assert typed[:-1] == fast[:-1] and all(typed)  # the typed path handled every real image
    _generic_only(monkeypatch)
    assert _read(data, image_data=info) == fast


def test_typed_fast_path_falls_back_on_unusual_objects(monkeypatch):
    objs = [
        {
            "id": 1,
            "regions": [{"region_id": 5, "width": 5, "height": 6, "image_id": 1, "phrase": " a\ncat ", "y": 1, "x": 2}],
        },
        {
            "regions": [{"region_id": 6, "width": 5.5, "height": 6, "image_id": 2, "phrase": "b", "y": 1, "x": 2}],
            "id": 2,
        },
        {
            "regions": [{"region_id": 7, "width": True, "height": 6, "image_id": 3, "phrase": "c", "y": 1, "x": 2}],
            "id": 3,
        },
        {
            "regions": [{"region_id": 8, "width": 1, "height": 6, "image_id": 4, "phrase": None, "y": 1, "x": 2}],
            "id": 4,
        },
        {"regions": [], "id": 5},
        {"regions": [{"region_id": 9, "width": 1, "height": 1, "image_id": 6, "phrase": "d", "y": 1, "x": 2}], "id": 6},
    ]
    data = json.dumps(objs).encode()
    mixed = _read(data)
    assert _ids(mixed) == ["1", "ingest_bad_box", "ingest_bad_box", "ingest_bad_region", "5", "6"]
    assert mixed[0]["regions"][0]["phrase"] == "a cat" and mixed[4]["regions"] == []
    _generic_only(monkeypatch)
    assert _read(data) == mixed


@pytest.mark.parametrize("chunk", [7, 64, 500])
def test_window_compaction_keeps_positions(monkeypatch, chunk):
    """Files far larger than the read window (the window drops consumed text many times)."""
    monkeypatch.setattr(vg, "CHUNK", chunk)
    monkeypatch.setattr(vg, "LOOKAHEAD", chunk)
    data = _synthetic(300, "ünïcødé dog")
    assert _ids(_read(data)) == [str(i) for i in range(300)]
    assert _ids(_split_read(data, 997)) == [str(i) for i in range(300)]


@pytest.mark.parametrize("cut", [1, 50, 400, -2, -1])
def test_truncated_file_keeps_what_was_read_and_reports(cut):
    data = _synthetic(10, "a dog")
    damaged = data[:cut] if cut > 0 else data[: len(data) + cut]
    whole, split = _read(damaged), _split_read(damaged, 97)
    assert _ids(whole) == _ids(split)
    assert isinstance(whole[-1], Failure) and whole[-1].reason == "ingest_vg_truncated"
    assert sum(isinstance(x, Failure) for x in whole) == 1
    assert _ids(whole[:-1]) == [str(i) for i in range(len(whole) - 1)]


def test_invalid_utf8_fails_only_its_object_at_its_true_offset():
    data = _synthetic(3, "x").replace(b'"x"', b'"\xff"', 1)
    items = _read(data)
    assert _ids(items) == ["ingest_invalid_utf8", "1", "2"]  # the images before and after it are read
    assert f"at byte {data.index(b'{', 1)}" in items[0].detail


@pytest.mark.parametrize(
    "element",
    [
        b"1",
        b'"text"',
        b"null",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"regions": [1]}',
        b'{"regions": 5}',
        b'{"id": 5, "regions": [{"region_id": ' + b"9" * 5001 + b', "phrase": "p", "x": 1, "y": 1, '
        b'"width": ' + b"9" * 5001 + b', "height": 1}]}',
        b'{"id": 6, "regions": [{"region_id": 1, "phrase": "a \\ud800 b", "x": 1, "y": 1, "width": 1, "height": 1}]}',
    ],
)
def test_one_hostile_element_fails_alone(element):
    first = _synthetic(1, "x")[1:-1]
    last = json.dumps(
        {"regions": [{"region_id": 20, "width": 5, "height": 6, "image_id": 2, "phrase": "y", "y": 1, "x": 2}], "id": 2}
    )
    data = b"[" + first + b", " + element + b", " + last.encode() + b"]"
    items = _read(data)
    assert [x for x in _ids(items) if not x.startswith("ingest_")] == ["0", "2"]  # before and after it
    assert sum(isinstance(x, Failure) for x in items) == 1


def test_not_an_array():
    assert _ids(_read(b'{"regions": []}')) == ["ingest_vg_not_an_array"]


def test_bad_region_box_fails_only_that_image():
    objs = json.loads(_synthetic(3, "a cat"))
    objs[1]["regions"][0]["width"] = "wide"
    items = _read(json.dumps(objs).encode())
    assert _ids(items) == ["0", "ingest_bad_box", "2"]
    assert items[1].image_id == "1"


def test_split_ranges_cover_exactly():
    ranges = vg.split_ranges(1000, 300)
    assert ranges[0][0] == 0 and ranges[-1][1] == 1000
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))


class _CountingStream(io.BytesIO):
    """A stream that remembers the furthest byte read."""

    furthest = 0

    def read(self, n=-1):
        data = super().read(n)
        self.furthest = max(self.furthest, self.tell())
        return data


def test_a_string_ending_in_a_brace_does_not_make_a_range_read_ahead():
    tricky = [
        {
            "regions": [
                {"region_id": 1, "width": 5, "height": 6, "image_id": 0, "phrase": "a sign saying {", "y": 1, "x": 2}
            ],
            "id": 0,
        }
    ]
    filler = [
        {
            "regions": [
                {"region_id": 10 + i, "width": 5, "height": 6, "image_id": i, "phrase": "x" * 2000, "y": 1, "x": 2}
            ],
            "id": i,
        }
        for i in range(1, 12_000)
    ]
    data = json.dumps(tricky + filler).encode("utf-8")  # about 24 MB
    start = data.index(b"saying {") - 3  # the range starts inside the tricky phrase: `{"` is its closing quote
    stream = _CountingStream(data)
    first = next(iter(vg.read_images(stream, "r.json", start, start + 100)))
    assert first["image_id"] == "1" and stream.furthest - start < 4 * vg.LOOKAHEAD  # not towards 256 MB


@pytest.mark.parametrize("key", vg.SCENE_KEYS)
def test_real_scene_files_read_the_same_whole_and_by_byte_range(real_samples, key):
    data = (real_samples / "visual_genome_1_50" / f"{key}.json").read_bytes()
    whole = list(vg.read_images(io.BytesIO(data), key, key=key))
    assert [p["image_id"] for p in whole] == [str(i) for i in range(1, 51)] and all(isinstance(p, dict) for p in whole)
    for target in (7_777, 50_000):  # many ranges start inside an image (and inside an object's own attribute list)
        parts = [
            p
            for s, e in vg.split_ranges(len(data), target)
            for p in vg.read_images(io.BytesIO(data), key, s, e, key=key)
        ]
        assert parts == whole


def test_scene_parts_attach_to_their_image_merged_ids_and_attributes_included():
    obj = {
        "object_id": 1,
        "names": ["Sidewalk "],
        "synsets": ["sidewalk.n.01"],
        "x": 0,
        "y": 5,
        "w": 10,
        "h": 20,
        "merged_object_ids": [7],
    }
    parts = [
        vg.scene_part({"image_id": 3, "objects": [obj]}, "objects"),
        vg.scene_part({"image_id": 3, "attributes": [{**obj, "object_id": 7, "attributes": ["Brick"]}]}, "attributes"),
        vg.scene_part(
            {
                "image_id": 3,
                "relationships": [
                    {
                        "predicate": "ON",
                        "subject": {**obj, "object_id": 9, "names": None, "name": "man"},
                        "object": {**obj, "object_id": 7},
                    }
                ],
            },
            "relationships",
        ),
    ]
    record = vg.attach_scene({"image_id": "3", "regions": []}, parts)
    assert [o["object_id"] for o in record["objects"]] == ["1", "9"]
    assert record["objects"][0]["names"] == ["sidewalk"] and record["objects"][0]["box"] == [0, 5, 10, 25]
    assert record["objects"][0]["attributes"] == ["brick"] and record["objects"][1]["unlisted"]
    assert record["relationships"] == [{"subject_id": "9", "predicate": "on", "object_id": "1"}]


def test_a_bad_scene_object_is_a_failure_naming_its_image():
    bad = json.dumps(
        [
            {"image_id": 4, "objects": [{"object_id": 1, "names": ["cat"], "x": 0, "y": 0, "w": -3, "h": 2}]},
            {"image_id": 5, "objects": [{"object_id": 2, "names": ["dog"]}]},
        ]
    ).encode()
    out = list(vg.read_images(io.BytesIO(bad), "objects.json", key="objects"))
    assert [(f.reason, f.image_id) for f in out] == [("ingest_bad_box", "4"), ("ingest_bad_object", "5")]
