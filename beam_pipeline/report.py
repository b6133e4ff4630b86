"""The run report: the sample it shows (a Beam transform) and ``report.html`` (written at the end of a run).

``python -m beam_pipeline.report OUTPUT_DIR [--image_root DIR]`` rebuilds the report (and the dataset
card, ``README.md``) of an existing output folder (local or ``gs://``) from its ``stats.json`` and
``report_sample/``: it reads nothing else.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam_pipeline.files import join, path_under, read_text
from comvint import card
from comvint import stats as run_stats
from comvint.card import CARD_FILE
from comvint.records import InputError
from comvint.report import page, sample

_LOGGER = logging.getLogger(__name__)
SAMPLE_DIR = "report_sample"
REPORT_FILE = "report.html"
MAX_PICTURE_BYTES = 1 << 20  # a larger image file is drawn as a neutral canvas
MAX_PICTURES_BYTES = 24 << 20  # what the report embeds of image files at most
MAGIC = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF8", "image/gif"),
    (b"RIFF", "image/webp"),
)


def image_mime(data: bytes) -> str | None:
    """The image type by its first bytes (names lie: a .jpg may hold a PNG); None if not an image."""
    return next((mime for magic, mime in MAGIC if data.startswith(magic)), None)


def _cards_if_chosen(record: Any, sink: str, chosen: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    unit = run_stats.unit_of(record)
    if unit in chosen:
        yield unit, sample.card(record, sink)


def _entry(joined: tuple[str, dict[str, list[Any]]]) -> Iterator[dict[str, Any]]:
    _, groups = joined
    if groups["image"]:
        yield sample.entry(groups["image"][0], list(groups["cards"]))


class SampleForReport(beam.PTransform):
    """``{"annotations", "instructions", "rejected", "failures"}`` -> one sample entry per chosen image.

    The ``images_per_source`` images of each source with the smallest seeded hash
    are chosen with a bounded combine (no record is held to choose them); every
    record of theirs becomes a card, so lineages are whole.
    """

    def __init__(self, images_per_source: int, seed: int) -> None:
        super().__init__()
        self._n, self._seed = images_per_source, seed

    def expand(self, pcolls: dict[str, beam.PCollection]):
        seed = self._seed
        chosen = (
            pcolls["annotations"]
            | "RankImages"
            >> beam.Map(lambda a: (a["source"], (sample.rank(seed, run_stats.unit_of(a)), run_stats.unit_of(a), a)))
            | "ChooseImages" >> beam.combiners.Top.SmallestPerKey(self._n, key=lambda v: v[:2])
            | "Geometry" >> beam.FlatMap(lambda kv: [(unit, sample.geometry(ann)) for _, unit, ann in kv[1]])
        )
        units = beam.pvalue.AsDict(chosen)
        cards = [
            pcolls[sink] | f"Cards{sink.title()}" >> beam.FlatMap(_cards_if_chosen, sink, units)
            for sink in ("instructions", "rejected", "failures")
        ]
        return (
            {"image": chosen, "cards": cards | "MergeCards" >> beam.Flatten()}
            | "JoinSample" >> beam.CoGroupByKey()
            | "BuildEntries" >> beam.FlatMap(_entry)
        )


def read_pictures(entries: list[Mapping[str, Any]], image_root: str | None) -> dict[str, str]:
    """Data URIs of the sample's image files under ``image_root`` (bounded in size; missing ones skipped)."""
    pictures: dict[str, str] = {}
    total = 0
    for entry in sorted(entries, key=lambda e: e["unit"]) if image_root else []:
        try:
            path = path_under(image_root, entry["image"])
        except InputError:
            continue  # a path that is not plain, or a link out of the root: never embedded
        if not FileSystems.exists(path):
            continue
        with FileSystems.open(path, compression_type="uncompressed") as handle:
            data = handle.read(MAX_PICTURE_BYTES + 1)
        mime = image_mime(data)
        if mime is None or len(data) > MAX_PICTURE_BYTES or total + len(data) > MAX_PICTURES_BYTES:
            continue
        total += len(data)
        pictures[entry["unit"]] = f"data:{mime};base64," + base64.b64encode(data).decode("ascii")
    return pictures


def write_report(
    stats: Mapping[str, Any], output: str, image_root: str | None, entries: list[Mapping[str, Any]]
) -> str:
    """Render and write ``<output>/report.html``; return its path."""
    path = join(output, REPORT_FILE)
    html = page.render(page.page_data(stats, list(entries), read_pictures(entries, image_root), output))
    with FileSystems.create(path, mime_type="text/html", compression_type="uncompressed") as handle:
        handle.write(html.encode("utf-8"))
    _LOGGER.info("Report: %s", path)
    return path


def write_card(stats: Mapping[str, Any], output: str) -> str:
    """Write the dataset card ``<output>/README.md``; return its path."""
    path = join(output, CARD_FILE)
    with FileSystems.create(path, mime_type="text/markdown", compression_type="uncompressed") as handle:
        handle.write(card.dataset_card(stats).encode("utf-8"))
    return path


def read_output(output: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``stats.json`` and the report sample of an output folder."""
    stats = json.loads(read_text(join(output, "stats.json")))
    matches = FileSystems.match([join(output, SAMPLE_DIR, "*.jsonl")])[0].metadata_list
    entries = [
        json.loads(line)
        for m in sorted(matches, key=lambda m: m.path)
        for line in read_text(m.path).splitlines()
        if line
    ]
    return stats, entries


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        prog="python -m beam_pipeline.report",
        description="Rebuild report.html and the dataset card README.md of a ComVint output folder.",
    )
    parser.add_argument("output", help="the run's --output (local path or gs://)")
    parser.add_argument("--image_root", default=None, help="where the image files are, to draw boxes over them")
    args = parser.parse_args(argv)
    stats, entries = read_output(args.output)
    path = write_report(stats, args.output, args.image_root, entries)
    print(path)
    print(write_card(stats, args.output))
    return path


if __name__ == "__main__":
    main()
