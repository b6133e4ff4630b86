"""The output folder's ``README.md``: a Hugging Face dataset card written from the run's ``stats.json``.

Its YAML header points ``datasets.load_dataset(<output folder>)`` at the instructions (the Parquet export
when the run wrote one, else ``instructions/*.jsonl``) and at the rejected items as a second config; the body
says where the data comes from, how it was made, what the run kept and dropped and why, what is known to be
wrong with it, and how to cite it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

CARD_FILE = "README.md"

# The sources' terms (the card's licence follows the most restrictive source the run read).
SOURCES = {
    "flickr30k_entities": {
        "name": "Flickr30k Entities",
        "url": "https://bryanplummer.com/Flickr30kEntities/",
        "terms": "annotations for non-commercial research use; the images are Flickr photos under the Flickr terms of "
        "use "
        "(see the Flickr30k dataset's terms)",
        "license": None,
        "bibtex": "@article{plummer2017flickr30k,\n  title={Flickr30k Entities: Collecting Region-to-Phrase "
        "Correspondences "
        "for Richer Image-to-Sentence Models},\n  author={Plummer, Bryan A. and Wang, Liwei and Cervantes, Chris M. "
        "and Caicedo, Juan C. and Hockenmaier, Julia and Lazebnik, Svetlana},\n  journal={International Journal of "
        "Computer Vision},\n  volume={123},\n  pages={74--93},\n  year={2017}\n}",
    },
    "visual_genome": {
        "name": "Visual Genome",
        "url": "https://homes.cs.washington.edu/~ranjay/visualgenome/",
        "terms": "annotations under Creative Commons Attribution 4.0 (CC BY 4.0)",
        "license": "cc-by-4.0",
        "bibtex": "@article{krishna2017visual,\n  title={Visual Genome: Connecting Language and Vision Using "
        "Crowdsourced "
        "Dense Image Annotations},\n  author={Krishna, Ranjay and Zhu, Yuke and Groth, Oliver and Johnson, Justin and "
        "Hata, Kenji and Kravitz, Joshua and Chen, Stephanie and Kalantidis, Yannis and Li, Li-Jia and Shamma, David "
        "A. "
        "and Bernstein, Michael S. and Fei-Fei, Li},\n  journal={International Journal of Computer Vision},\n  "
        "volume={123},\n  pages={32--73},\n  year={2017}\n}",
    },
}
METHOD_BIBTEX = (
    "@article{du2023makes,\n  title={What Makes for Good Visual Instructions? Synthesizing Complex Visual "
    "Reasoning Instructions for Visual Instruction Tuning},\n  author={Du, Yifan and Guo, Hangyu and Zhou, Kun and "
    "Zhao, Wayne Xin and Wang, Jinpeng and Wang, Chuyuan and Cai, Mingchen and Song, Ruihua and Wen, Ji-Rong},\n"
    "  journal={arXiv preprint arXiv:2311.01487},\n  year={2023}\n}"
)
SIZES = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
)
LIMITATIONS = {
    "offline": [
        "The instructions were written by ComVint's built-in **offline engine** (templates over the annotations' "
        "boxes, phrases and WordNet 3.0 facts), not by a language model: their wording is templated and repeats "
        "across images, and outside-knowledge facts are WordNet's (a category, a part, a use), not world knowledge at "
        "large: for varied wording, mix in or prefer a run with a language model.",
    ],
    "openai": [
        "The instructions and answers were written and judged by a language model that read the text annotations "
        "(and, where the run sent them, the pictures): a judge can pass an item the picture does not support.",
        "Outputs of a commercial model may carry that provider's terms of use for training other models.",
    ],
    "all": [
        "Questions are only as right as the annotations: a missing box or a wrong phrase in the source makes a wrong "
        "item.",
        "Flickr30k photos over-represent people and everyday scenes; Visual Genome images are MS-COCO and YFCC photos: "
        "both inherit their collections' geographic and demographic skew.",
        "English only.",
    ],
}


def size_category(n: int) -> str:
    return next((label for limit, label in SIZES if n < limit), "n>10M")


def licence(sources: list[str]) -> dict[str, str]:
    """The card's licence fields: a source's own when there is one source with one, else ``other`` with details."""
    licences = {SOURCES[s]["license"] for s in sources if s in SOURCES}
    if len(licences) == 1 and None not in licences:
        return {"license": licences.pop()}
    terms = "; ".join(f"{SOURCES[s]['name']}: {SOURCES[s]['terms']}" for s in sources if s in SOURCES)
    return {"license": "other", "license_name": "comvint-sources", "license_details": terms or "see the sources' terms"}


def data_files(exports: list[str]) -> str:
    return "export/parquet/*.parquet" if "parquet" in exports else "instructions/*.jsonl"


def header(stats: Mapping[str, Any]) -> dict[str, Any]:
    """The card's YAML metadata (Hugging Face's dataset card fields)."""
    counts = stats.get("counts", {})
    kept = counts.get("instructions", {}).get("total", 0)
    return {
        **licence(run_sources(stats)),  # the card publishes rejected/ too: every source the run read
        "language": ["en"],
        "pretty_name": "ComVint complex visual reasoning instructions",
        "task_categories": ["visual-question-answering", "image-text-to-text"],
        "tags": ["visual-instruction-tuning", "synthetic", "comvint"],
        "size_categories": [size_category(kept)],
        "configs": [
            {
                "config_name": "default",
                "default": True,
                "data_files": [{"split": "train", "path": data_files(stats.get("exports", []))}],
            },
            {"config_name": "rejected", "data_files": [{"split": "train", "path": "rejected/*.jsonl"}]},
        ],
    }


def run_sources(stats: Mapping[str, Any]) -> list[str]:
    """Every source the run read: those of its instructions, its rejected items and its failures."""
    counts = stats.get("counts", {})
    return sorted(
        {s for part in ("instructions", "rejected", "failures") for s in counts.get(part, {}).get("source", {})}
    )


def table(rows: list[tuple[Any, ...]], head: tuple[str, ...]) -> list[str]:
    return [
        f"| {' | '.join(head)} |",
        f"|{' --- |' * len(head)}",
        *(f"| {' | '.join(str(c) for c in r)} |" for r in rows),
    ]


def by_count(counter: Mapping[str, int]) -> list[tuple[str, int]]:
    return sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))


def body(stats: Mapping[str, Any]) -> list[str]:
    counts, backend = stats.get("counts", {}), stats.get("llm_backend", "offline")
    kept = counts.get("instructions", {})
    sources = run_sources(stats)
    accounting = stats.get("accounting", {})
    lines = [
        "# ComVint complex visual reasoning instructions",
        "",
        "Question/answer pairs about images that need careful observation and reasoning (cross-modal, from Flickr30k "
        "Entities captions and boxes) or visible facts combined with outside knowledge (from Visual Genome regions), "
        "made by ComVint with the method of Du et al. 2023: **synthesize → complicate ⟲ verify "
        "→ reformulate**.",
        "",
        "## Loading",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        'instructions = load_dataset("path/to/this/folder", split="train")',
        'rejected = load_dataset("path/to/this/folder", "rejected", split="train")  # what was dropped, and why',
        "```",
        "",
        "Images are not included: `image` is a path relative to the source dataset's image folder.",
        "",
        "## Sources",
        "",
        *(f"- [{SOURCES[s]['name']}]({SOURCES[s]['url']}): {SOURCES[s]['terms']}." for s in sources if s in SOURCES),
        "",
        "## How it was made",
        "",
        f"- Backend: `{backend}` ({stats.get('llm_mode', 'online')} mode); {stats.get('rounds', '?')} "
        "complicate-verify rounds.",
        "- Each image gives 3 synthesized instructions; each is verified, complicated and verified again up to the "
        "round "
        "limit (an item that fails verification is dropped with the judge's evidence); a share of the verified items "
        "is also reformulated as yes/no and 4-way multiple-choice questions, themselves verified.",
        f"- Quality filters, then exact and near-duplicate removal (Jaccard ≥ {stats.get('dedup_threshold', '?')} on "
        f"character 5-grams, at most {stats.get('max_per_cluster', '?')} items per near-duplicate cluster).",
        "",
        "## This run",
        "",
        f"- Inputs: {accounting.get('inputs', '?')} images and files; every one ends in the instructions, the rejected "
        f"items or the failures (accounting identity {'holds' if accounting.get('identity_holds') else 'BROKEN'}).",
        f"- Kept: **{kept.get('total', 0)}** instructions.",
        "",
        *table(
            [(f, n) for f, n in by_count(kept.get("family+format", {}) or _family_format(kept))],
            ("family:format", "kept"),
        ),
        "",
    ]
    rejected = counts.get("rejected", {})
    if rejected.get("total"):
        lines += [
            f"Rejected: {rejected['total']} (the `rejected` config holds each with its reason).",
            "",
            *table(by_count(rejected.get("stage+reason", {})), ("stage:reason", "rejected")),
            "",
        ]
    failures = counts.get("failures", {})
    if failures.get("total"):
        lines += [
            f"Failures (inputs or calls that could not be processed): {failures['total']}.",
            "",
            *table(by_count(failures.get("stage+reason", {})), ("stage:reason", "failed")),
            "",
        ]
    lines += [
        "## Known limitations",
        "",
        *(f"- {text}" for text in [*LIMITATIONS.get(backend, []), *LIMITATIONS["all"]]),
        "",
        "## Citation",
        "",
        "Cite the method and the sources:",
        "",
        "```bibtex",
        METHOD_BIBTEX,
        *(SOURCES[s]["bibtex"] for s in sources if s in SOURCES),
        "```",
        "",
    ]
    return lines


def _family_format(kept: Mapping[str, Any]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for key, n in kept.get("family+format+round", {}).items():
        family, form, _ = key.split(":")
        merged[f"{family}:{form}"] = merged.get(f"{family}:{form}", 0) + n
    return merged


def dataset_card(stats: Mapping[str, Any]) -> str:
    """The whole ``README.md``: YAML header between ``---`` lines, then the card's Markdown."""
    return "\n".join(
        ["---", yaml.safe_dump(header(stats), sort_keys=False, allow_unicode=True).rstrip(), "---", "", *body(stats)]
    )
