"""Flickr30k Entities: ``Sentences/<id>.txt`` + ``Annotations/<id>.xml`` -> one record.

Sentences mark phrases as ``[/EN#<entity>/<type>[/<type>...] words ...]``; the XML
holds the image size and one ``<object>`` per box (or per ``scene``/``nobndbox``
flag), each naming one or more entities.  Every problem raises
:class:`~comvint.records.InputError` with a reason code.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from lxml import etree

from comvint.records import FLICKR, Box, InputError, annotation_record

NOT_VISUAL = "0"
_PHRASE_OPEN = "[/EN#"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


def decode_utf8(data: bytes, what: str) -> str:
    """Decode strict UTF-8 (a BOM is tolerated) or raise ``ingest_invalid_utf8``."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError("ingest_invalid_utf8", f"{what}: byte {err.start}") from err


def _parse_header(token: str) -> tuple[str, list[str]]:
    parts = token[len(_PHRASE_OPEN) :].split("/")
    entity_id, types = parts[0], [t for t in parts[1:] if t]
    if not entity_id.isdigit() or not types:
        raise InputError("ingest_bad_phrase_markup", f"bad phrase header {token!r}")
    return entity_id, types


def parse_caption(line: str) -> dict[str, Any]:
    """Parse one Sentences line into ``{"text", "phrases"}`` (contract layout)."""
    words: list[str] = []
    phrases: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for token in line.split():
        if token.startswith("["):
            if current is not None or not token.startswith(_PHRASE_OPEN):
                raise InputError("ingest_unbalanced_bracket", f"unexpected '[' in {line!r}")
            entity_id, types = _parse_header(token)
            current = {"words": [], "entity_id": entity_id, "types": types, "first_word_index": len(words)}
            continue
        closes = token.endswith("]")
        word = token[:-1] if closes else token
        if "[" in word or "]" in word or (closes and current is None):
            raise InputError("ingest_unbalanced_bracket", f"unbalanced bracket in {line!r}")
        if word:
            words.append(word)
        if current is not None:
            if word:
                current["words"].append(word)
            if closes:
                phrases.append(_finish_phrase(current))
                current = None
    if current is not None:
        raise InputError("ingest_unbalanced_bracket", f"unclosed '[' in {line!r}")
    return {"text": " ".join(words), "phrases": phrases}


def _finish_phrase(current: dict[str, Any]) -> dict[str, Any]:
    return {
        "text": " ".join(current["words"]),
        "entity_id": current["entity_id"],
        "types": current["types"],
        "first_word_index": current["first_word_index"],
    }


def lines_of(text: str) -> list[str]:
    """The lines of a file split on line feeds only (``\r\n`` too): ``str.splitlines`` would also split inside a
    caption at U+2028, U+0085 or a form feed, and break it in two."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def parse_sentences(text: str) -> list[dict[str, Any]]:
    """Parse a whole Sentences file (one caption per non-blank line)."""
    lines = [line for line in lines_of(text) if line.strip()]
    if not lines:
        raise InputError("ingest_empty_sentences", "the Sentences file has no caption")
    return [parse_caption(line) for line in lines]


def child_texts(element: Any) -> dict[Any, str]:
    """The text of each direct child by tag, as ``findtext`` reads it (the first of a repeated tag; ``""`` for an
    empty one): one pass over the children instead of one search per tag."""
    texts: dict[Any, str] = {}
    for child in element:
        texts.setdefault(child.tag, child.text or "")
    return texts


def _int(texts: dict[Any, str], tag: str, what: str) -> int:
    text = texts.get(tag)
    if text is None:
        raise InputError(what, f"missing <{tag}>")
    try:
        return int(text.strip())
    except ValueError:
        raise InputError(what, f"<{tag}> is not an integer: {text.strip()!r}") from None


def parse_box(bndbox: Any, width: int, height: int) -> tuple[Box, bool]:
    """Convert a 1-based inclusive ``<bndbox>`` to a 0-based exclusive ``[x1, y1, x2, y2]``.

    A box reaching past the image is clipped to it (returned with ``True``); a box
    wholly outside the image is an error.
    """
    texts = child_texts(bndbox)
    xmin, ymin = _int(texts, "xmin", "ingest_bad_box"), _int(texts, "ymin", "ingest_bad_box")
    xmax, ymax = _int(texts, "xmax", "ingest_bad_box"), _int(texts, "ymax", "ingest_bad_box")
    if xmax < xmin or ymax < ymin:
        raise InputError("ingest_bad_box", f"inverted box {[xmin, ymin, xmax, ymax]}")
    if xmin > width or ymin > height or xmax < 1 or ymax < 1:
        raise InputError("ingest_box_outside_image", f"box {[xmin, ymin, xmax, ymax]} wholly outside {width}x{height}")
    box = [max(xmin, 1) - 1, max(ymin, 1) - 1, min(xmax, width), min(ymax, height)]
    return box, box != [xmin - 1, ymin - 1, xmax, ymax]


def _flag(texts: dict[Any, str], tag: str) -> bool:
    text = texts.get(tag)
    return text is not None and text.strip() not in ("", "0")


def parse_annotation_xml(data: bytes) -> tuple[int, int, list[dict[str, Any]], int]:
    """Parse an Annotations XML into ``(width, height, entities, boxes clipped to the image)``.

    Entities keep every box of their chain (boxes shared between chains appear
    in each), in order of first appearance; entity ``0`` is never listed.
    """
    try:
        root = etree.fromstring(data, parser=_PARSER)
    except etree.XMLSyntaxError as err:
        raise InputError("ingest_malformed_xml", str(err)) from None
    size = root.find("size")
    if size is None:
        raise InputError("ingest_missing_size", "the XML has no <size>")
    sizes = child_texts(size)
    width, height = _int(sizes, "width", "ingest_bad_size"), _int(sizes, "height", "ingest_bad_size")
    if width <= 0 or height <= 0:
        raise InputError("ingest_bad_size", f"size {width}x{height}")
    entities: dict[str, dict[str, Any]] = {}
    clipped = 0
    for obj in root.iter("object"):
        names, bndbox = [], None
        for child in obj:  # one pass: its names, its first box, its flags
            if child.tag == "name":
                names.append(child)
            elif child.tag == "bndbox" and bndbox is None:
                bndbox = child
        box, was_clipped = parse_box(bndbox, width, height) if bndbox is not None else (None, False)
        clipped += was_clipped
        flags = child_texts(obj) if names else {}
        scene, no_box = _flag(flags, "scene"), _flag(flags, "nobndbox")
        for name in names:
            entity_id = (name.text or "").strip()
            if not entity_id or entity_id == NOT_VISUAL:
                continue
            entity = entities.setdefault(
                entity_id, {"entity_id": entity_id, "boxes": [], "scene": False, "no_box": False}
            )
            if box is not None:
                entity["boxes"].append(box)
            entity["scene"] |= scene
            entity["no_box"] |= no_box
    return width, height, list(entities.values()), clipped


def parse_unrelated_captions(text: str) -> frozenset[tuple[str, int]]:
    """Parse ``UNRELATED_CAPTIONS`` (``<imageID> <sentence number>``, 1-based) to a set."""
    pairs = set()
    for line in lines_of(text):
        fields = line.split()
        if len(fields) == 2 and not line.startswith("#"):
            pairs.add((fields[0], int(fields[1])))
    return frozenset(pairs)


def parse_split(text: str) -> frozenset[str]:
    """Parse a split file (one image id per line)."""
    return frozenset(line.strip() for line in lines_of(text) if line.strip() and not line.startswith("#"))


def build_record(
    image_id: str,
    sentences: bytes,
    xml: bytes,
    unrelated: Iterable[tuple[str, int]] = (),
) -> dict[str, Any]:
    """Build the normalised annotation record of one Flickr30k Entities image."""
    captions = parse_sentences(decode_utf8(sentences, "Sentences"))
    width, height, entities, clipped = parse_annotation_xml(xml)
    unrelated = unrelated if isinstance(unrelated, (set, frozenset)) else set(unrelated)
    kept, dropped = [], []
    for number, caption in enumerate(captions, start=1):
        if (image_id, number) in unrelated:
            dropped.append({"sentence_number": number, "reason": "unrelated_caption", "text": caption["text"]})
        else:
            kept.append(caption)
    extra = {"dropped_captions": dropped} if dropped else {}
    if clipped:
        extra["clipped_boxes"] = clipped  # boxes that reached past the image, clipped to it
    return annotation_record(
        image_id=image_id,
        source=FLICKR,
        width=width,
        height=height,
        image=f"flickr30k-images/{image_id}.jpg",
        captions=kept,
        entities=entities,
        **extra,
    )


def format_box(box: Box) -> str:
    return "[" + ", ".join(str(v) for v in box) + "]"


def convert_caption(caption: dict[str, Any], boxes_by_entity: dict[str, list[Box]]) -> str:
    """Render a caption with every grounded phrase followed by all its boxes.

    This is the original ``process.sh`` "Convert" layout, without its bug of
    keeping only the last box of an entity.
    """
    words = caption["text"].split(" ")
    suffix: dict[int, str] = {}
    for phrase in caption["phrases"]:
        boxes = boxes_by_entity.get(phrase["entity_id"], [])
        if boxes and phrase["text"]:
            last = phrase["first_word_index"] + len(phrase["text"].split(" ")) - 1
            suffix[last] = " " + " ".join(format_box(b) for b in boxes)
    return " ".join(word + suffix.get(i, "") for i, word in enumerate(words))


def convert_record(record: dict[str, Any]) -> str:
    """The "Convert" text of a whole Flickr30k record: one rendered caption per line."""
    boxes = {e["entity_id"]: e["boxes"] for e in record["entities"]}
    return "".join(convert_caption(c, boxes) + "\n" for c in record["captions"])
