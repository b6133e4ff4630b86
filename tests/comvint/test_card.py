"""comvint.card: the dataset card's metadata follows the run (sources, size, exports)."""

from __future__ import annotations

import yaml

from comvint import card


def stats(sources: dict[str, int], exports: list[str] | None = None, backend: str = "offline") -> dict:
    kept = sum(sources.values())
    return {
        "counts": {
            "instructions": {"total": kept, "source": sources, "family+format+round": {"cross_modal:bool:0": kept}}
        },
        "exports": exports or [],
        "llm_backend": backend,
        "accounting": {"inputs": 3, "identity_holds": True},
    }


def meta(text: str) -> dict:
    return yaml.safe_load(text.split("---\n")[1])


def test_the_licence_follows_the_sources_the_run_read():
    assert meta(card.dataset_card(stats({"visual_genome": 4})))["license"] == "cc-by-4.0"
    both = meta(card.dataset_card(stats({"visual_genome": 4, "flickr30k_entities": 2})))
    assert both["license"] == "other" and "non-commercial" in both["license_details"]
    # rejected/ is published beside the instructions: a source only rejected items came from still binds the card
    only_rejected = stats({"visual_genome": 4})
    only_rejected["counts"]["rejected"] = {"total": 1, "source": {"flickr30k_entities": 1}}
    assert meta(card.dataset_card(only_rejected))["license"] == "other"


def test_the_size_category_and_the_default_config_follow_the_run():
    assert [card.size_category(n) for n in (0, 999, 1000, 99_999, 100_000, 20_000_000)] == [
        "n<1K",
        "n<1K",
        "1K<n<10K",
        "10K<n<100K",
        "100K<n<1M",
        "n>10M",
    ]
    with_parquet = meta(card.dataset_card(stats({"visual_genome": 1}, ["parquet"])))
    assert with_parquet["configs"][0]["data_files"] == [{"split": "train", "path": "export/parquet/*.parquet"}]
    assert (
        meta(card.dataset_card(stats({"visual_genome": 1})))["configs"][0]["data_files"][0]["path"]
        == "instructions/*.jsonl"
    )


def test_the_limitations_name_the_backend_that_wrote_the_data():
    assert "offline engine" in card.dataset_card(stats({"visual_genome": 1}))
    llm = card.dataset_card(stats({"visual_genome": 1}, backend="openai"))
    assert "offline engine" not in llm and "language model" in llm
