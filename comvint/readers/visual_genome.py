"""Visual Genome ``region_descriptions.json`` (v1.2 or v1.0), read streaming and by byte range.

The file is one JSON array of ``{"regions": [...], "id": <image>}`` objects on a
single line (0.7 GB for v1.2).  :func:`read_images` decodes one image object at
a time with the C JSON scanner, so memory is bounded by the largest image, and
it reads only the objects whose opening ``{`` lies in ``[start, end)``: splitting
a file into byte ranges and reading each range gives every image exactly once.

Finding the first object of a range that starts mid-file is sound because the
bytes ``{"`` cannot occur inside a JSON string (a ``"`` inside a string is escaped):
the reader tries each ``{``, reads a ``{"`` candidate to its end whatever its size,
and takes the first that decodes to an object with a ``regions`` key.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from typing import IO, Any

import msgspec

from comvint.records import VISUAL_GENOME, Failure, InputError, annotation_record, plain_id, safe_relative

CHUNK = 1 << 20
LOOKAHEAD = 1 << 20
MAX_OBJECT = 256 << 20
_SEPARATORS = re.compile(r"[\s,]*")
MAX_INT_DIGITS = 30  # a longer integer literal is kept as text, which fails the type checks of its field


def _bounded_int(text: str) -> int | str:
    return int(text) if len(text) <= MAX_INT_DIGITS else text


_DECODER = json.JSONDecoder(parse_int=_bounded_int)
# Where a range starts mid-file, a candidate worth reading on is an image object's first key: `{"`
# alone also ends a string whose last character is `{` ("a sign saying {", "x": ...).
_IMAGE_OBJECT_START = re.compile(r'\{\s*"(?:regions|objects|attributes|relationships|id|image_id)"\s*:')
MAX_UNSYNCED = 16 << 20  # lookahead bound for a candidate before the first image of a range


class _TextWindow:
    """A sliding window of decoded text over a byte stream, tracking byte offsets."""

    def __init__(self, stream: IO[bytes], start: int) -> None:
        stream.seek(start)
        head = stream.read(4)
        skip = 0
        while skip < len(head) and start > 0 and (head[skip] & 0xC0) == 0x80:
            skip += 1  # a range starting inside a multi-byte character
        stream.seek(start + skip)
        self.stream = stream
        self.decoder = codecs.getincrementaldecoder("utf-8")(
            errors="surrogateescape"
        )  # a bad byte fails its object only
        self.text = ""
        self.i = 0
        self.byte = start + skip
        self.eof = False

    def fill(self, upto: int) -> None:
        """Make ``text`` extend past index ``upto`` unless the stream ends first."""
        if self.i > CHUNK and self.i > len(self.text) // 2:
            self.text, upto = self.text[self.i :], upto - self.i
            self.i = 0
        while len(self.text) <= upto and not self.eof:
            data = self.stream.read(CHUNK)
            self.eof = not data
            self.text += self.decoder.decode(data, final=self.eof)

    def advance(self, j: int) -> None:
        self.byte += len(self.text[self.i : j].encode("utf-8", "surrogateescape"))
        self.i = j

    def find(self, char: str) -> int:
        """Index of the next ``char`` at or after ``i`` (-1 at end of stream)."""
        while True:
            j = self.text.find(char, self.i)
            if j >= 0 or self.eof:
                return j
            self.fill(len(self.text) + CHUNK)

    def find_after(self, sub: str, offset: int) -> int:
        """Index of the next ``sub`` at or after ``i + offset`` (-1 at end of stream)."""
        while True:
            j = self.text.find(sub, self.i + offset)
            if j >= 0 or self.eof:
                return j
            self.fill(len(self.text) + CHUNK)

    def next_token(self) -> str:
        """Skip whitespace and commas; return the next character ('' at end)."""
        while True:
            j = _SEPARATORS.match(self.text, self.i).end()
            if j < len(self.text) or self.eof:
                self.advance(j)
                return self.text[j] if j < len(self.text) else ""
            self.fill(len(self.text) + CHUNK)


def normalise_phrase(phrase: str) -> str:
    """Strip surrounding whitespace and fold embedded newlines and runs of spaces."""
    return " ".join(phrase.split())


def _region(raw: dict[str, Any]) -> dict[str, Any]:
    # Runs 5 million times for v1.2: plain lookups and exact type checks (bool is not a box value).
    region_id = raw["region_id"] if "region_id" in raw else raw["id"]
    x, y, w, h = raw["x"], raw["y"], raw["width"], raw["height"]
    if type(x) is not int or type(y) is not int or type(w) is not int or type(h) is not int:
        raise InputError("ingest_bad_box", f"region {region_id}: non-integer box {[x, y, w, h]}")
    if w < 0 or h < 0:
        raise InputError("ingest_bad_box", f"region {region_id}: negative size {[w, h]}")
    phrase = raw["phrase"]
    if type(phrase) is not str:
        raise InputError("ingest_bad_region", f"region {region_id}: phrase is {type(phrase).__name__}, not text")
    return region_record(region_id, phrase, x, y, w, h)


def region_record(region_id: Any, phrase: str, x: int, y: int, w: int, h: int) -> dict[str, Any]:
    """The contract's region: string id, normalised phrase, ``[x1, y1, x2, y2]`` box."""
    return {"region_id": str(region_id), "phrase": normalise_phrase(phrase), "box": [x, y, x + w, y + h]}


def image_id_of(obj: dict[str, Any]) -> str | None:
    """The image id of a top-level object (``id`` in both versions, ``image_id`` tolerated)."""
    value = obj.get("id", obj.get("image_id"))
    regions = obj.get("regions")
    if value is None and isinstance(regions, list) and regions and isinstance(regions[0], dict):
        value = regions[0].get("image_id", regions[0].get("image"))
    return None if value is None or isinstance(value, dict | list) else str(value)


def detect_version(obj: dict[str, Any]) -> str:
    """``1.2`` when regions carry ``region_id``, ``1.0`` when they carry ``image``+``id``."""
    for region in obj.get("regions", []):
        return "1.2" if "region_id" in region else "1.0"
    return "unknown"


def build_record(obj: dict[str, Any], info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Normalise one top-level region-descriptions object (plus optional image_data)."""
    image_id = image_id_of(obj)
    if image_id is None:
        raise InputError("ingest_missing_image_id", "an image object without id")
    try:
        regions = [_region(r) for r in obj["regions"]]
    except (KeyError, TypeError) as err:
        raise InputError("ingest_bad_region", f"image {image_id}: missing field {err}") from None
    return _assemble(image_id, regions, detect_version(obj), info)


class _Region(msgspec.Struct):
    """A region as v1.2 (``region_id``) or v1.0 (``id``, ``image``) writes it; types checked in C."""

    x: int
    y: int
    width: int
    height: int
    phrase: str
    region_id: int | str | None = None
    id: int | str | None = None


class _Image(msgspec.Struct):
    regions: list[_Region]
    id: int | str | None = None


_TYPED = msgspec.json.Decoder(_Image)


def typed_record(image: _Image, info: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The record of a typed-decoded image; None when it needs the checks of :func:`build_record`."""
    regions = []
    for r in image.regions:
        region_id = r.region_id if r.region_id is not None else r.id
        if region_id is None or r.width < 0 or r.height < 0:  # msgspec already refused non-integers and booleans
            return None
        regions.append(region_record(region_id, r.phrase, r.x, r.y, r.width, r.height))
    if image.id is None or not regions or not plain_id(str(image.id)):
        return None
    return _assemble(str(image.id), regions, "1.2" if image.regions[0].region_id is not None else "1.0", info)


def _assemble(
    image_id: str, regions: list[dict[str, Any]], version: str, info: dict[str, Any] | None
) -> dict[str, Any]:
    if not plain_id(image_id):  # it names files (the picture, Convert/<id>.txt) and keys: never a path
        raise InputError("ingest_bad_image_id", f"image id {image_id[:80]!r} is not a plain identifier")
    info = info or {}
    if any(k in info and not valid_size(info[k]) for k in ("width", "height")):
        raise InputError(
            "ingest_bad_image_size",
            f"image {image_id}: image_data gives {info.get('width')!r} x {info.get('height')!r}",
        )
    url = info.get("url") or ""
    tail = "/".join(url.split("/")[-2:]) if isinstance(url, str) else ""
    image = f"visual_genome/{tail}" if url and safe_relative(tail) else f"visual_genome/{image_id}.jpg"
    extra = {k: _str_or_none(info.get(k)) for k in ("coco_id", "flickr_id") if k in info}
    return annotation_record(
        image_id=image_id,
        source=VISUAL_GENOME,
        width=info.get("width"),
        height=info.get("height"),
        image=image,
        regions=regions,
        vg_version=version,
        **extra,
    )


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def parse_image_data(text: str) -> dict[str, dict[str, Any]]:
    """Parse ``image_data.json`` into ``{image_id: entry}`` (about 17 MB for v1.2); :class:`InputError` for a file
    that is not a JSON array of objects. An entry without an id is left out; its image is read without one."""
    try:
        entries = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise InputError(
            "ingest_bad_image_data", f"image_data is not JSON: {type(err).__name__}: {str(err)[:120]}"
        ) from None
    if not isinstance(entries, list):
        raise InputError("ingest_bad_image_data", f"image_data is a JSON {type(entries).__name__}, not an array")
    return {
        str(key): e
        for e in entries
        if isinstance(e, dict)
        and (key := e.get("image_id", e.get("id"))) is not None
        and not isinstance(key, dict | list)
    }


def valid_size(value: Any) -> bool:
    """A width or height: a positive integer (not a bool, not NaN, not negative)."""
    return type(value) is int and 0 < value < 1 << 20


def read_images(
    stream: IO[bytes],
    path: str,
    start: int = 0,
    end: int | None = None,
    image_data: dict[str, dict[str, Any]] | None = None,
    key: str = "regions",
) -> Iterator[dict[str, Any] | Failure]:
    """Yield the records (and failures) of the image objects starting in ``[start, end)``.

    ``key`` names the per-image list the file holds: ``regions`` (region descriptions: annotation
    records), or ``objects``, ``attributes``, ``relationships`` (scene parts, see :func:`scene_part`).

    A damaged tail yields what was read before it, then one ``ingest_vg_truncated``
    (or ``ingest_invalid_utf8``) failure naming the byte offset.
    """
    size = stream.seek(0, 2)
    end = size if end is None else min(end, size)
    try:
        window = _TextWindow(stream, start)
        yield from _read_objects(window, path, start, end, end >= size, image_data or {}, key)
    except UnicodeDecodeError as err:
        yield _file_failure(path, "ingest_invalid_utf8", f"invalid UTF-8 near byte {err.start}")


def _read_objects(
    window: _TextWindow, path: str, start: int, end: int, last: bool, image_data: dict, key: str = "regions"
) -> Iterator[dict[str, Any] | Failure]:
    synced = start == 0
    if synced and window.next_token() != "[":
        yield _file_failure(path, "ingest_vg_not_an_array", "the file does not start with '['")
        return
    if synced:
        window.advance(window.i + 1)
    while True:
        j = _next_object_start(window, synced)
        if j is None:
            return
        if j == NOT_AN_OBJECT:  # an element that is not an image object: that element fails, the rest are read
            failure, go_on = _fail_element(
                window, path, "ingest_vg_not_an_object", f"the element at byte {window.byte} is not an image object"
            )
            yield failure
            if not go_on:
                return
            continue
        if j < 0:
            if (last or synced and window.byte < end) and not window.text.rstrip().endswith("]"):
                yield _file_failure(path, "ingest_vg_truncated", f"file ends at byte {window.byte} inside the array")
            return
        window.advance(j)
        if window.byte >= end:
            return
        fast = _decode_typed(window, image_data) if synced and key == "regions" else None
        if fast is not None:
            record, stop = fast
            yield record
            window.advance(stop)
            continue
        at = window.byte
        try:
            obj, stop = _decode_at(window, synced)
        except _BadValue as err:  # decodable as far as JSON goes, but not as a value here (too deep, too long a number)
            if not synced:
                window.advance(window.i + 1)
                continue
            failure, go_on = _fail_element(
                window, path, "ingest_vg_bad_object", f"the image object at byte {at}: {err}"
            )
            yield failure
            if not go_on:
                return
            continue
        if stop is None:
            if synced:
                yield _file_failure(
                    path,
                    "ingest_vg_truncated",
                    f"unreadable image object at byte {window.byte}; kept the images before it",
                )
                return
            window.advance(window.i + 1)
            continue
        if not synced and not (
            isinstance(obj, dict) and key in obj and "object_id" not in obj
        ):  # an attribute list is inside objects too
            window.advance(window.i + 1)
            continue
        synced = True
        if _has_surrogate(window.text[window.i : stop]):  # a byte that is not UTF-8 (or an escaped lone surrogate)
            image_id = image_id_of(obj) if isinstance(obj, dict) else None
            yield Failure(
                stage="ingest",
                reason="ingest_invalid_utf8",
                source=VISUAL_GENOME,
                image_id=image_id,
                path=path,
                detail=f"the image object at byte {at} holds bytes that are not UTF-8 or a lone surrogate",
            )
        else:
            yield _to_record(obj, path, image_data) if key == "regions" else _to_part(obj, path, key)
        window.advance(stop)


NOT_AN_OBJECT = -2
_SURROGATE = re.compile(r"[\ud800-\udfff]|\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


class _BadValue(Exception):
    """A value the decoder refuses for a reason other than where it ends (nesting too deep, a number too long)."""


def _has_surrogate(text: str) -> bool:
    """Whether raw text holds an undecodable byte (kept as a surrogate escape) or an escaped lone surrogate."""
    if not _SURROGATE.search(text):
        return False
    try:  # a raw surrogate, or an escaped one left unpaired, cannot be written as UTF-8
        json.dumps(_DECODER.decode(text), ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, ValueError, RecursionError):
        return True
    return False


def _value_end(window: _TextWindow) -> int:
    """Index just past the JSON value at the window's position, by scanning (never recursing); -1 at end of data
    or past ``MAX_OBJECT`` characters."""
    depth, j, in_string = 0, window.i, False
    while True:
        if j >= len(window.text):
            if window.eof or j - window.i > MAX_OBJECT:
                return -1
            offset = j - window.i
            window.fill(len(window.text) + CHUNK)
            j = window.i + offset
            continue
        c = window.text[j]
        if in_string:
            if c == "\\":
                j += 1
            elif c == '"':
                in_string = False
                if depth == 0:
                    return j + 1
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
        elif c in "]}":
            if depth == 0:
                return j  # a scalar ended by the array's close
            depth -= 1
            if depth == 0:
                return j + 1
        elif depth == 0 and (c == "," or c.isspace()):
            return j
        j += 1


def _fail_element(window: _TextWindow, path: str, reason: str, detail: str) -> tuple[Failure, bool]:
    """The failure of the element at the window's position (skipped), and whether reading can go on past it."""
    stop = _value_end(window)
    if stop < 0:
        return _file_failure(path, "ingest_vg_truncated", f"file ends at byte {window.byte} inside the array"), False
    window.advance(stop)
    return Failure(stage="ingest", reason=reason, source=VISUAL_GENOME, path=path, detail=detail), True


def _next_object_start(window: _TextWindow, synced: bool) -> int | None:
    """Index of the next candidate ``{``; None at the closing ``]``; -1 at end of data."""
    if not synced:
        return window.find("{")
    token = window.next_token()
    if token == "]":
        return None
    if token == "":
        return -1
    return window.i if token == "{" else NOT_AN_OBJECT


_IMAGE_START = '{"regions"'


def _decode_typed(window: _TextWindow, image_data: dict) -> tuple[dict[str, Any], int] | None:
    """The fast path: ``(record, end index)`` of the image object at the window's position.

    The object ends where the next ``{"regions"`` begins (that text cannot occur
    inside a string); msgspec decodes it with the types checked in C, about five
    times faster than the generic decoder. Anything unusual (another key order,
    a wrong type, the damaged or last object) returns None and takes the generic path.
    """
    if not window.text.startswith(_IMAGE_START, window.i):
        window.fill(window.i + len(_IMAGE_START))
        if not window.text.startswith(_IMAGE_START, window.i):
            return None
    j = window.find_after(_IMAGE_START, 1)
    if j < 0:
        return None
    segment = window.text[window.i : j].rstrip().rstrip(",").rstrip()
    try:
        image = _TYPED.decode(segment.encode("utf-8"))
    except (msgspec.DecodeError, UnicodeEncodeError):
        return None
    record = typed_record(image, image_data.get(str(image.id)))
    return None if record is None else (record, window.i + len(segment))


def _decode_at(window: _TextWindow, synced: bool) -> tuple[Any, int | None]:
    """Decode the value at the window's position; ``(obj, end index)`` or ``(None, None)``.

    ``fill`` may drop consumed text and shift indices, so the position is read
    from the window after each fill, never kept across one.
    """
    lookahead = LOOKAHEAD
    window.fill(window.i + 64)
    # Synced, the value here is the next image: read on until it is complete, however large. Not
    # synced, only a candidate that opens like an image object is read on, and only so far.
    limit = MAX_OBJECT if synced else MAX_UNSYNCED if _IMAGE_OBJECT_START.match(window.text, window.i) else LOOKAHEAD
    while True:
        window.fill(window.i + lookahead)
        try:
            return _DECODER.raw_decode(window.text, window.i)
        except json.JSONDecodeError:
            if window.eof or lookahead >= limit:
                return None, None
            lookahead *= 4
        except (ValueError, RecursionError) as err:
            raise _BadValue(f"{type(err).__name__}: {str(err)[:120]}") from None


def _to_record(obj: Any, path: str, image_data: dict) -> dict[str, Any] | Failure:
    image_id = image_id_of(obj) if isinstance(obj, dict) else None
    try:
        return build_record(obj, image_data.get(image_id or ""))
    except InputError as err:
        return Failure(
            stage="ingest", reason=err.reason, source=VISUAL_GENOME, image_id=image_id, path=path, detail=err.detail
        )


SCENE_KEYS = ("objects", "attributes", "relationships")


def _name_of(raw: dict[str, Any]) -> list[str]:
    names = raw.get("names") if raw.get("names") is not None else [raw.get("name")]
    return [" ".join(str(n).lower().split()) for n in names if isinstance(n, str) and n.strip()]


def scene_object(raw: dict[str, Any]) -> dict[str, Any]:
    """One VG object (as ``objects.json``, ``attributes.json`` or a relationship's end writes it), normalised:
    string id, lower-case names, synsets, ``[x1, y1, x2, y2]`` box, merged ids, attributes."""
    x, y, w, h = raw["x"], raw["y"], raw["w"], raw["h"]
    if any(type(v) is not int for v in (x, y, w, h)) or w < 0 or h < 0:
        raise InputError("ingest_bad_box", f"object {raw.get('object_id')}: box {[x, y, w, h]}")
    obj = {
        "object_id": str(raw["object_id"]),
        "names": _name_of(raw),
        "synsets": [str(s) for s in raw.get("synsets") or []],
        "box": [x, y, x + w, y + h],
        "merged_ids": [str(m) for m in raw.get("merged_object_ids") or []],
    }
    attributes = [
        " ".join(str(a).lower().split()) for a in raw.get("attributes") or [] if isinstance(a, str) and a.strip()
    ]
    return {**obj, "attributes": attributes} if attributes else obj


def scene_part(obj: dict[str, Any], key: str) -> dict[str, Any]:
    """``{"image_id", key: [...]}`` of one image of ``objects.json``, ``attributes.json`` or ``relationships.json``."""
    image_id = image_id_of(obj)
    if image_id is None:
        raise InputError("ingest_missing_image_id", f"an image object of {key} without id")
    if not plain_id(image_id):
        raise InputError("ingest_bad_image_id", f"image id {image_id[:80]!r} is not a plain identifier")
    try:
        if key == "relationships":
            items = [
                {
                    "predicate": " ".join(str(r["predicate"]).lower().split()),
                    "subject": scene_object(r["subject"]),
                    "object": scene_object(r["object"]),
                }
                for r in obj[key]
            ]
        else:
            items = [scene_object(o) for o in obj[key]]
    except (KeyError, TypeError) as err:
        raise InputError(f"ingest_bad_{key[:-1]}", f"image {image_id}: missing field {err}") from None
    return {"image_id": image_id, key: items}


def _to_part(obj: Any, path: str, key: str) -> dict[str, Any] | Failure:
    image_id = image_id_of(obj) if isinstance(obj, dict) else None
    try:
        return scene_part(obj, key)
    except InputError as err:
        return Failure(
            stage="ingest", reason=err.reason, source=VISUAL_GENOME, image_id=image_id, path=path, detail=err.detail
        )


def attach_scene(record: dict[str, Any], parts: list[dict[str, Any]]) -> dict[str, Any]:
    """A region record with its image's objects (attributes merged in, one entry per object id) and
    relationships (``{"subject_id", "predicate", "object_id"}``; an end missing from ``objects`` is added)."""
    objects: dict[str, dict[str, Any]] = {}
    alias: dict[str, str] = {}

    def add(obj: dict[str, Any], listed: bool = False) -> str:
        known = objects.get(alias.get(obj["object_id"], obj["object_id"]))
        if (
            known is None
        ):  # an object only an attribute or relationship names is kept, marked as not listed in objects.json
            known = objects[obj["object_id"]] = {
                **obj,
                "attributes": list(obj.get("attributes", [])),
                **({} if listed else {"unlisted": True}),
            }
            for merged in obj["merged_ids"]:
                alias.setdefault(merged, obj["object_id"])
        else:
            known["attributes"] = list(dict.fromkeys(known["attributes"] + obj.get("attributes", [])))
        return known["object_id"]

    by_key = {k: [x for p in parts for x in p.get(k, [])] for k in SCENE_KEYS}
    for obj in by_key["objects"]:
        add(obj, listed=True)
    for obj in by_key["attributes"]:
        add(obj)
    relations = []
    for rel in by_key["relationships"]:
        relations.append(
            {"subject_id": add(rel["subject"]), "predicate": rel["predicate"], "object_id": add(rel["object"])}
        )
    return {
        **record,
        "objects": sorted(objects.values(), key=lambda o: (len(o["object_id"]), o["object_id"])),
        "relationships": relations,
    }


def _file_failure(path: str, reason: str, detail: str) -> Failure:
    return Failure(stage="ingest", reason=reason, source=VISUAL_GENOME, path=path, detail=detail)


def split_ranges(size: int, target: int) -> list[tuple[int, int]]:
    """Cut ``[0, size)`` into byte ranges of about ``target`` bytes (at least one)."""
    if size <= 0:
        return [(0, 1)]
    n = max(1, -(-size // target))
    bounds = [size * k // n for k in range(n + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))
