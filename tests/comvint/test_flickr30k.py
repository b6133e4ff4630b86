"""The Flickr30k Entities reader on real files, the bundled sample and every bad-input kind."""

from __future__ import annotations

import pytest

from comvint.readers import flickr30k
from comvint.records import InputError
from tests.conftest import DATA

XML = b"""<annotation><filename>7.jpg</filename>
<size><width>100</width><height>50</height><depth>3</depth></size>
<object><name>1</name><name>2</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>10</xmax><ymax>20</ymax></bndbox></object>
<object><name>1</name><bndbox><xmin>50</xmin><ymin>5</ymin><xmax>100</xmax><ymax>50</ymax></bndbox></object>
<object><name>3</name><scene>1</scene><nobndbox>0</nobndbox></object>
<object><name>4</name><scene>0</scene><nobndbox>1</nobndbox></object>
<object><name>0</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></object>
</annotation>"""
SENTENCES = b"[/EN#1/people A man] and [/EN#2/people/other a kid] sit in [/EN#3/scene a park]\n"


def test_real_65567_record(real_samples):
    base = real_samples / "flickr30k_entities"
    record = flickr30k.build_record(
        "65567", (base / "Sentences/65567.txt").read_bytes(), (base / "Annotations/65567.xml").read_bytes()
    )
    assert (record["width"], record["height"], record["image"]) == (375, 500, "flickr30k-images/65567.jpg")
    first = record["captions"][0]
    assert first["text"] == "A bearded man , and a girl in a red dress are getting married ."
    assert first["phrases"][0] == {
        "text": "A bearded man",
        "entity_id": "255542",
        "types": ["people"],
        "first_word_index": 0,
    }
    assert first["phrases"][2]["first_word_index"] == 8
    entities = {e["entity_id"]: e for e in record["entities"]}
    assert entities["255542"] == {"entity_id": "255542", "boxes": [[23, 62, 208, 500]], "scene": False, "no_box": False}
    # 255547 ("A wedding party") names two objects: both boxes, shared with other chains.
    assert entities["255547"]["boxes"] == [[23, 62, 208, 500], [161, 95, 333, 497]]
    assert entities["255544"]["boxes"] == [[161, 95, 333, 497], [0, 61, 330, 499]]
    assert entities["255546"] == {"entity_id": "255546", "boxes": [], "scene": False, "no_box": True}
    assert len(record["entities"]) == 9


def test_real_notvisual_and_multi_type_and_no_final_period(real_samples):
    base = real_samples / "flickr30k_entities"
    tennis = flickr30k.parse_sentences((base / "Sentences/23008340.txt").read_text())
    assert tennis[0]["phrases"][-1] == {"text": "her", "entity_id": "0", "types": ["notvisual"], "first_word_index": 17}
    md = flickr30k.parse_sentences((base / "from_markdown/Sentences/65567.txt").read_text())
    assert md[3]["phrases"][1]["types"] == ["bodyparts", "people"]
    gym = flickr30k.parse_sentences((base / "from_markdown/Sentences/81641.txt").read_text())
    assert gym[4]["text"] == "A man doing gymnastic stunts"
    types = {tuple(p["types"]) for c in gym for p in c["phrases"] if p["entity_id"] == "279867"}
    assert types == {("people",), ("other",)}


def test_real_partial_xml(real_samples):
    xml = (real_samples / "flickr30k_entities/from_markdown/Annotations_partial/1000092795.partial.xml").read_bytes()
    width, height, entities, _ = flickr30k.parse_annotation_xml(xml)
    by_id = {e["entity_id"]: e for e in entities}
    assert (width, height) == (333, 500)
    assert by_id["4"]["boxes"] == [[0, 219, 211, 473], [275, 214, 332, 337]]
    assert by_id["1"]["boxes"] == [[158, 124, 219, 335], [196, 109, 261, 373]]
    assert by_id["6"]["boxes"] == [[196, 109, 261, 373]]
    assert by_id["10"]["no_box"] is True


def test_real_splits_and_unrelated(real_samples):
    splits = real_samples / "flickr30k_entities/splits"
    assert len(flickr30k.parse_split((splits / "val.txt").read_text())) == 1000
    assert len(flickr30k.parse_split((splits / "train.txt").read_text())) == 29783
    unrelated = flickr30k.parse_unrelated_captions((splits / "UNRELATED_CAPTIONS").read_text())
    assert len(unrelated) == 21 and ("129602216", 5) in unrelated


def test_xml_flags_shared_boxes_and_entity_zero():
    width, height, entities, _ = flickr30k.parse_annotation_xml(XML)
    assert (width, height) == (100, 50)
    assert entities == [
        {"entity_id": "1", "boxes": [[0, 0, 10, 20], [49, 4, 100, 50]], "scene": False, "no_box": False},
        {"entity_id": "2", "boxes": [[0, 0, 10, 20]], "scene": False, "no_box": False},
        {"entity_id": "3", "boxes": [], "scene": True, "no_box": False},
        {"entity_id": "4", "boxes": [], "scene": False, "no_box": True},
    ]


def test_unrelated_caption_dropped_and_reported():
    record = flickr30k.build_record("7", SENTENCES + b"[/EN#1/people A man] waves .\n", XML, {("7", 2)})
    assert [c["text"] for c in record["captions"]] == ["A man and a kid sit in a park"]
    assert record["dropped_captions"] == [
        {"sentence_number": 2, "reason": "unrelated_caption", "text": "A man waves ."}
    ]


def test_convert_keeps_every_box():
    record = flickr30k.build_record("7", SENTENCES, XML)
    assert flickr30k.convert_record(record) == (
        "A man [0, 0, 10, 20] [49, 4, 100, 50] and a kid [0, 0, 10, 20] sit in a park\n"
    )


def test_bundled_sample_parses():
    root = DATA / "flickr30k_entities"
    record = flickr30k.build_record(
        "900002", (root / "Sentences/900002.txt").read_bytes(), (root / "Annotations/900002.xml").read_bytes()
    )
    assert len(record["captions"]) == 5 and len(record["entities"]) == 6


def _xml(box: str = "<xmin>1</xmin><ymin>1</ymin><xmax>10</xmax><ymax>20</ymax>", size: str | None = None) -> bytes:
    size = size if size is not None else "<size><width>100</width><height>50</height></size>"
    return f"<annotation>{size}<object><name>1</name><bndbox>{box}</bndbox></object></annotation>".encode()


@pytest.mark.parametrize(
    "box, clipped",
    [
        ("<xmin>1</xmin><ymin>1</ymin><xmax>101</xmax><ymax>20</ymax>", [0, 0, 100, 20]),  # past the right edge
        ("<xmin>0</xmin><ymin>-5</ymin><xmax>10</xmax><ymax>70</ymax>", [0, 0, 10, 50]),  # past three edges
    ],
)
def test_a_box_reaching_past_the_image_is_clipped(box, clipped):
    record = flickr30k.build_record("7", SENTENCES, _xml(box))
    assert record["entities"][0]["boxes"] == [clipped] and record["clipped_boxes"] == 1
    assert "clipped_boxes" not in flickr30k.build_record(
        "7", SENTENCES, _xml("<xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax>")
    )


@pytest.mark.parametrize(
    "sentences, xml, reason",
    [
        (SENTENCES, XML[:200], "ingest_malformed_xml"),
        (SENTENCES, _xml(size=""), "ingest_missing_size"),
        (SENTENCES, _xml(size="<size><width>a</width><height>5</height></size>"), "ingest_bad_size"),
        (SENTENCES, _xml("<xmin>x</xmin><ymin>1</ymin><xmax>10</xmax><ymax>20</ymax>"), "ingest_bad_box"),
        (SENTENCES, _xml("<xmin>9</xmin><ymin>1</ymin><xmax>3</xmax><ymax>20</ymax>"), "ingest_bad_box"),
        (SENTENCES, _xml("<xmin>101</xmin><ymin>1</ymin><xmax>120</xmax><ymax>20</ymax>"), "ingest_box_outside_image"),
        (SENTENCES, _xml("<xmin>1</xmin><ymin>51</ymin><xmax>10</xmax><ymax>60</ymax>"), "ingest_box_outside_image"),
        (b"\xff\xfe[/EN#1/people A man] .", XML, "ingest_invalid_utf8"),
        (b"\n  \n", XML, "ingest_empty_sentences"),
        (b"[/EN#1/people A man sits .\n", XML, "ingest_unbalanced_bracket"),
        (b"A man ] sits .\n", XML, "ingest_unbalanced_bracket"),
        (b"[/EN#1/people A [/EN#2/other man] sits .\n", XML, "ingest_unbalanced_bracket"),
        (b"[/EN#x/people A man] sits .\n", XML, "ingest_bad_phrase_markup"),
    ],
)
def test_bad_inputs_raise_reason(sentences, xml, reason):
    with pytest.raises(InputError) as err:
        flickr30k.build_record("7", sentences, xml)
    assert err.value.reason == reason
