"""Ingest at full dataset size: synthetic Flickr30k Entities and Visual Genome trees in the real formats.

    python bench/ingest_bench.py                     # 31,783 Flickr images; 108,077 VG images x 50 regions (~0.7 GB)
    python bench/ingest_bench.py --flickr 2000 --vg 5000   # a quick look
    # the real release (Flickr only): an unpacked flickr30k_entities tree
    python bench/ingest_bench.py --flickr_root /tmp/f30k/flickr30k_entities --vg 0

Each measurement runs in its own process (wall time with startup, peak RSS of the process tree):
  * Flickr: ``--stages ingest`` on the local runner vs a plain single-process loop that parses the
    same files with the standard library's ElementTree and writes the same JSON lines;
  * Visual Genome: ``--stages ingest`` vs ``json.load`` of the same file (which only parses it).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import measure, ratio  # noqa: E402
from bench.corpora import annotation_xml, box_object, write_flickr_tree, write_vg  # noqa: E402

TYPES = ("people", "clothing", "bodyparts", "animals", "vehicles", "instruments", "scene", "other")
WORDS = (
    "man woman dog ball shirt red blue green street park child bike car tree hat table cup girl boy water grass "
    "building sign window door chair shoes jacket bag phone camera guitar horse beach sand wave sky"
).split()


def _phrase(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))


def flickr_files(rng: random.Random, image_id: int) -> tuple[str, str]:
    """(Sentences text, Annotations XML) of one synthetic image."""
    width, height = rng.randint(300, 500), rng.randint(300, 500)
    entities = [image_id * 10 + k for k in range(6)]
    lines = []
    for _ in range(5):
        parts = []
        for entity in rng.sample(entities, 4):
            parts.append(f"[/EN#{entity}/{rng.choice(TYPES)} {_phrase(rng)}] {rng.choice(WORDS)}")
        if rng.random() < 0.3:
            parts.append(f"[/EN#0/notvisual {rng.choice(WORDS)}]")
        lines.append(" ".join(parts) + " .")
    objects = []
    for entity in entities:
        names = f"\t\t<name>{entity}</name>\n" + (
            f"\t\t<name>{entities[0]}</name>\n" if rng.random() < 0.2 and entity != entities[0] else ""
        )
        if entity == entities[-1]:
            objects.append(f"\t<object>\n{names}\t\t<scene>0</scene>\n\t\t<nobndbox>1</nobndbox>\n\t</object>\n")
            continue
        for _ in range(rng.randint(1, 2)):
            x1, y1 = rng.randint(1, width // 2), rng.randint(1, height // 2)
            objects.append(box_object(names, (x1, y1, rng.randint(x1 + 1, width), rng.randint(y1 + 1, height))))
    return "\n".join(lines) + "\n", annotation_xml(image_id, width, height, objects)


def generate_flickr(root: str, n: int, seed: int = 3) -> None:
    rng = random.Random(seed)
    write_flickr_tree(root, ((1_000_000 + k, *flickr_files(rng, 1_000_000 + k)) for k in range(n)))


def generate_vg(path: str, n: int, regions: int = 50, seed: int = 5) -> None:
    """A one-line v1.2 ``region_descriptions.json`` of ``regions`` random-word regions per image."""
    rng = random.Random(seed)

    def region(image_id: int, region_id: int, made: int):
        if made >= regions:
            return None
        return {
            "region_id": region_id,
            "width": rng.randint(5, 400),
            "height": rng.randint(5, 400),
            "image_id": image_id,
            "phrase": _phrase(rng) + (" " if rng.random() < 0.3 else ""),
            "y": rng.randint(0, 400),
            "x": rng.randint(0, 400),
        }

    write_vg(path, n, region)


_MARK = re.compile(r"\[/EN#(\d+)/(\S+) ([^\]]*)\]")


def elementtree_loop(root: str, out_path: str) -> dict:
    """The baseline: parse every pair with ElementTree and a regex, write one JSON line per image."""
    import xml.etree.ElementTree as ET

    n = 0
    with open(out_path, "w", encoding="utf-8") as out:
        for name in sorted(os.listdir(os.path.join(root, "Annotations"))):
            image_id = name[:-4]
            tree = ET.parse(os.path.join(root, "Annotations", name)).getroot()
            size = tree.find("size")
            boxes: dict[str, list] = {}
            for obj in tree.iter("object"):
                box = obj.find("bndbox")
                for entity in obj.iter("name"):
                    entry = boxes.setdefault(entity.text, [])
                    if box is not None:
                        entry.append(
                            [
                                int(box.find(k).text) - (1 if k in ("xmin", "ymin") else 0)
                                for k in ("xmin", "ymin", "xmax", "ymax")
                            ]
                        )
            captions = []
            with open(os.path.join(root, "Sentences", f"{image_id}.txt"), encoding="utf-8") as handle:
                for line in handle:
                    phrases = [
                        {"entity_id": m.group(1), "types": m.group(2).split("/"), "text": m.group(3)}
                        for m in _MARK.finditer(line)
                    ]
                    captions.append({"text": _MARK.sub(lambda m: m.group(3), line.strip()), "phrases": phrases})
            out.write(
                json.dumps(
                    {
                        "image_id": image_id,
                        "width": int(size.find("width").text),
                        "height": int(size.find("height").text),
                        "captions": captions,
                        "entities": [{"entity_id": e, "boxes": b} for e, b in boxes.items() if e != "0"],
                    }
                )
                + "\n"
            )
            n += 1
    return {"images": n}


def warm_cache(root: str) -> None:
    """Read every file of the tree once, so that both sides of the comparison read from the page cache."""
    for folder in ("Annotations", "Sentences"):
        for name in os.listdir(os.path.join(root, folder)):
            with open(os.path.join(root, folder, name), "rb") as handle:
                handle.read()


def pipeline_ingest(args: list[str]) -> dict:
    from beam_pipeline import main

    main.run(["--stages", "ingest", *args])
    out = args[args.index("--output") + 1]
    with open(os.path.join(out, "stats.json"), encoding="utf-8") as handle:
        stats = json.load(handle)
    return {
        "records": stats["counts"].get("annotations", {}).get("total", 0),
        "failures": stats["counts"].get("failures", {}).get("total", 0),
    }


def json_load(path: str) -> dict:
    with open(path, encoding="utf-8") as handle:
        return {"images": len(json.load(handle))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flickr", type=int, default=31783)
    parser.add_argument("--vg", type=int, default=108077)
    parser.add_argument("--flickr_root", default=None, help="a real Flickr30k Entities tree instead of a generated one")
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "comvint-bench-ingest"))
    parser.add_argument(
        "--role", choices=("main", "pipeline", "etree", "json_load"), default="main", help=argparse.SUPPRESS
    )
    parser.add_argument("--args", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role != "main":
        call = {
            "pipeline": lambda: pipeline_ingest(json.loads(args.args)),
            "etree": lambda: elementtree_loop(*json.loads(args.args)),
            "json_load": lambda: json_load(*json.loads(args.args)),
        }[args.role]
        print(json.dumps(call()))
        return
    os.makedirs(args.work, exist_ok=True)
    flickr_root = args.flickr_root or os.path.join(args.work, f"flickr-{args.flickr}")
    vg_path = os.path.join(args.work, f"vg-{args.vg}.json")
    if not os.path.isdir(flickr_root):
        generate_flickr(flickr_root, args.flickr)
    if args.vg and not os.path.exists(vg_path):
        generate_vg(vg_path, args.vg)
    images = len(os.listdir(os.path.join(flickr_root, "Annotations")))
    warm_cache(flickr_root)
    me = os.path.abspath(__file__)

    def run(role: str, payload) -> dict:
        return measure([me, "--role", role, "--args", json.dumps(payload)])

    etree = run("etree", [flickr_root, os.path.join(args.work, "etree.jsonl")])
    flickr = run("pipeline", ["--flickr_root", flickr_root, "--output", os.path.join(args.work, "out-flickr")])
    report = {
        "flickr_root": flickr_root,
        "flickr_images": images,
        "flickr": {
            "pipeline": flickr,
            "elementtree_loop": etree,
            "time_ratio": ratio(flickr["wall_s"], etree["wall_s"]),
        },
    }
    if args.vg:
        loaded = run("json_load", [vg_path])
        vg = run("pipeline", ["--vg_regions", vg_path, "--output", os.path.join(args.work, "out-vg")])
        report["vg_images"], report["vg_file_mb"] = args.vg, round(os.path.getsize(vg_path) / 2**20, 1)
        report["visual_genome"] = {
            "pipeline": vg,
            "json_load": loaded,
            "time_ratio": ratio(vg["wall_s"], loaded["wall_s"]),
            "memory_ratio": ratio(vg["peak_rss_mb"], loaded["peak_rss_mb"]),
        }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
