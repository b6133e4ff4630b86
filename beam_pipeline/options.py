"""Command-line flags of the ComVint job (contract.md) as Beam pipeline options."""

from __future__ import annotations

import os

from apache_beam.options.pipeline_options import PipelineOptions

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_FLICKR = os.path.join(PACKAGE_ROOT, "data", "flickr30k_entities")
SAMPLE_VG = os.path.join(PACKAGE_ROOT, "data", "visual_genome", "region_descriptions.json")
SAMPLE_VG_IMAGE_DATA = os.path.join(PACKAGE_ROOT, "data", "visual_genome", "image_data.json")
SAMPLE_IMAGES = os.path.join(
    PACKAGE_ROOT, "data", "images"
)  # pictures of the sample, drawn by tools/draw_sample_images.py
STAGES = ("all", "ingest")


def _true_or_false(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise ValueError(f"expected true or false, not {text!r}")
    return text.lower() == "true"


class ComvintOptions(PipelineOptions):
    """Every ComVint flag, in groups; converted once into frozen configs by ``pipeline.py``."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        add = parser.add_argument_group("inputs").add_argument
        add(
            "--flickr_root",
            default=None,
            help="Flickr30k Entities tree with Annotations/ and Sentences/ (default: the bundled sample)",
        )
        add("--flickr_split", default=None, help="train, val, test or a file of image ids (default: every image)")
        add(
            "--unrelated_captions",
            default=None,
            help="UNRELATED_CAPTIONS file (default: <flickr_root>/UNRELATED_CAPTIONS)",
        )
        add("--keep_unrelated_captions", action="store_true", help="keep captions listed as unrelated")
        add(
            "--vg_regions",
            default=None,
            help="Visual Genome region_descriptions.json, v1.2 or v1.0 (default: the bundled sample)",
        )
        add("--vg_image_data", default=None, help="Visual Genome image_data.json (sizes, coco_id, flickr_id)")
        for key in ("objects", "attributes", "relationships"):
            add(
                f"--vg_{key}",
                default=None,
                help=f"Visual Genome {key}.json (default: {key}.json beside --vg_regions, if there; 'none': not read)",
            )
        add("--vg_split_mb", type=int, default=64, help="byte-range size in MB for splitting the region file")
        add("--limit", type=int, default=0, help="process at most N images per source (0: all)")
        add(
            "--image_root",
            default=None,
            help="where the image files are (local or gs://): sent to the judges (see --llm_image_stages) and drawn in "
            "report.html",
        )

        add = parser.add_argument_group("method").add_argument
        add(
            "--stages",
            default="all",
            choices=STAGES,
            help="'ingest' writes only annotations/; 'all' runs the whole method",
        )
        add("--seed", type=int, default=0, help="seed for every sampled choice")
        add("--rounds", type=int, default=2, help="complicate-verify rounds")
        add(
            "--min_caption_chars",
            type=int,
            default=240,
            help="Flickr image filter: total caption length (10th percentile of the real train+val)",
        )
        add(
            "--max_objects",
            type=int,
            default=60,
            help="VG image filter: at most this many objects (objects.json, merged; the regions when it is absent)",
        )
        add(
            "--llm_max_regions",
            type=int,
            default=40,
            help="region lines a call shows of a Visual Genome image: regions of one object merged, the most "
            "informative first",
        )
        add(
            "--reformulate_share",
            type=float,
            default=0.5,
            help="share of verified items also reformulated to Bool and MC",
        )
        add(
            "--verify_reformulations",
            type=_true_or_false,
            default=True,
            metavar="true|false",
            help="judge each Bool and multiple-choice record itself; false: it says it inherits its parent's verdict",
        )

        add = parser.add_argument_group("LLM").add_argument
        add(
            "--llm",
            default="offline",
            choices=("offline", "openai"),
            help="backend: the built-in engine or any OpenAI-compatible endpoint",
        )
        add(
            "--llm_base_url",
            default=None,
            help="OpenAI-compatible endpoint (default: the SDK's); the key comes from OPENAI_API_KEY",
        )
        add(
            "--llm_api_key_secret",
            default=None,
            metavar="projects/P/secrets/S/versions/V",
            help="read the API key from this Google Secret Manager version in each worker (instead of OPENAI_API_KEY)",
        )
        add("--llm_model", default="gpt-4o-mini", help="model for every stage")
        add("--llm_stage_models", default="", help="per-stage overrides, e.g. verify=gpt-4o-mini,reformulate=...")
        add("--llm_temperature", type=float, default=0.7, help="sampling temperature")
        add(
            "--llm_stage_temperatures",
            default="verify=0,verify_reformulated=0",
            help="per-stage temperatures, e.g. verify=0,generate=1.0",
        )
        add("--llm_max_tokens", type=int, default=1024, help="max completion tokens per call")
        add("--llm_timeout", type=float, default=60.0, help="seconds per request")
        add("--llm_max_retries", type=int, default=5, help="retries per request")
        add(
            "--llm_concurrency",
            type=int,
            default=512,
            help="most requests in flight per worker; the worker starts at 32 and adapts to what the endpoint accepts",
        )
        add(
            "--llm_rpm",
            type=float,
            default=0,
            help="the job's requests per minute, shared by its workers (0: adapt to the endpoint)",
        )
        add(
            "--llm_tpm",
            type=float,
            default=0,
            help="the job's tokens per minute, shared by its workers (0: adapt to the endpoint)",
        )
        add(
            "--llm_workers",
            type=int,
            default=0,
            help="worker processes sharing --llm_rpm/--llm_tpm/--llm_max_cost_usd (0: from the runner's flags; on "
            "Flink, "
            "TaskManagers x --sdk_worker_parallelism: run_flink.sh sets it)",
        )
        add(
            "--llm_response_format",
            default="json_schema",
            choices=("json_schema", "json_object", "text"),
            help="structured output the endpoint supports",
        )
        add("--llm_prices", default="", help="price per 1M tokens for the cost estimate: 'model=in:out,...'")
        add(
            "--llm_max_cost_usd",
            type=float,
            default=0,
            help="stop spending at this estimated cost (from --llm_prices; 0: no cap): unpaid items go to failures/ as "
            "llm_budget_exhausted",
        )
        add(
            "--llm_mode",
            default="online",
            choices=("online", "batch"),
            help="online: one request per call; batch: the Batch API (files + batches, half the price, within 24 h; "
            "needs --cache_dir)",
        )
        add(
            "--llm_batch_poll_s",
            type=float,
            default=60.0,
            help="batch mode: seconds between polls of a batch (backs off on errors)",
        )
        add("--llm_batch_max_requests", type=int, default=50_000, help="batch mode: most lines per batch file")
        add("--llm_batch_max_mb", type=float, default=200.0, help="batch mode: largest batch file in MB")
        add(
            "--llm_batch_discount",
            type=float,
            default=0.5,
            help="batch mode: price cut of the Batch API for the cost estimate (OpenAI: 0.5)",
        )
        add(
            "--llm_server_cmd",
            default=None,
            metavar="'CMD ... {port} ...'",
            help="start this OpenAI-compatible server (e.g. vllm serve ... --port {port}) once per worker machine and "
            "send every stage to it (with --llm openai)",
        )
        add(
            "--llm_server_startup_s",
            type=float,
            default=600.0,
            help="how long a --llm_server_cmd server may take to answer GET /v1/models",
        )
        add(
            "--llm_image_stages",
            default="",
            metavar="STAGES|all|none",
            help="stages whose calls carry the picture (from --image_root): default the judges "
            "(verify,verify_reformulated) "
            "when --image_root is set; 'all' adds generate, complicate and reformulate",
        )
        add(
            "--llm_image_detail",
            default="low",
            choices=("low", "high", "auto"),
            help="the detail the pictures are sent at",
        )
        add(
            "--llm_image_max_px",
            type=int,
            default=0,
            help="cap the longest side of a sent picture (0: the detail's own fit)",
        )
        add(
            "--llm_image_tokens",
            type=int,
            default=0,
            help="prompt tokens per picture, for a model with no known formula",
        )
        add(
            "--cache_dir",
            default=None,
            help="response cache directory (local or gs://): reruns pay nothing for what finished",
        )

        add = parser.add_argument_group("dedup and filters").add_argument
        add(
            "--max_per_cluster",
            type=int,
            default=10,
            help="keep at most K items per near-duplicate cluster across images",
        )
        add(
            "--dedup_threshold",
            type=float,
            default=0.7,
            help="Jaccard similarity (character 5-grams) of near-duplicates",
        )
        add(
            "--dedup_band_waves",
            type=int,
            default=0,
            help="run the 16 LSH band shuffles in this many waves, one after another (0: one band at a time on the "
            "local runner, which holds every shuffle in memory; all at once on any other runner)",
        )
        add("--max_instruction_chars", type=int, default=600, help="quality filter: longest instruction kept")
        add("--max_answer_chars", type=int, default=1000, help="quality filter: longest answer kept")

        add = parser.add_argument_group("outputs").add_argument
        add("--output", default="output", help="output prefix (local path or gs://)")
        add(
            "--export",
            default="",
            help="comma-separated copies of the instructions: llava,messages,trl,avro,parquet,review "
            "(review: a Label Studio import of a sample, for human spot checks)",
        )
        add("--review_tasks", type=int, default=500, help="--export review: how many instructions (chosen by --seed)")
        add("--num_shards", type=int, default=0, help="shards per output (0: one per --shard_mb of data)")
        add("--shard_mb", type=float, default=100, help="with --num_shards 0: about this many MB of JSON per shard")
        add("--write_annotations", action="store_true", help="also write annotations/ in a full run")
        add("--write_convert", action="store_true", help="write Convert/<id>.txt files as process.sh did")
        add(
            "--report_images_per_source", type=int, default=100, help="images per source in the report's sample browser"
        )
        add = parser.add_argument_group("data lake").add_argument
        add(
            "--lake",
            default="",
            choices=("", "iceberg", "delta"),
            help="after the accounting check, commit instructions (and rejected, to <table>_rejected) to a table, "
            "one atomic commit each; rerunning the same job adds nothing",
        )
        add(
            "--lake_table",
            default="",
            help="table name (Iceberg: namespace.table, default comvint.instructions; "
            "Delta: default instructions, a folder under --lake_uri)",
        )
        add(
            "--lake_uri",
            default="",
            help="folder of the tables and their data files, local or gs:// / s3:// (default: <output>/lake)",
        )
        add(
            "--lake_catalog",
            default="",
            help="Iceberg catalog: a SQLAlchemy URL (SQL catalog) or http(s):// (REST catalog); "
            "default: a SQLite catalog at <lake_uri>/catalog.db",
        )


# Flags that change where or how fast a run goes, not what it writes: left out of the configuration hash
# that makes a lake commit idempotent (the same inputs and method settings commit once).
OPERATIONAL = frozenset(
    {
        "output",
        "export",
        "review_tasks",
        "num_shards",
        "shard_mb",
        "write_annotations",
        "write_convert",
        "report_images_per_source",
        "cache_dir",
        "llm_api_key_secret",
        "llm_timeout",
        "llm_max_retries",
        "llm_concurrency",
        "llm_rpm",
        "llm_tpm",
        "llm_workers",
        "llm_prices",
        "llm_mode",
        "llm_batch_poll_s",
        "llm_batch_max_requests",
        "llm_batch_max_mb",
        "llm_batch_discount",
        "llm_server_cmd",
        "llm_server_startup_s",
        "dedup_band_waves",
        "lake",
        "lake_table",
        "lake_uri",
        "lake_catalog",
    }
)


def content_settings(options: PipelineOptions) -> dict:
    """The job's own flags that decide what a run writes (every ComVint flag not in OPERATIONAL)."""
    import argparse

    parser = argparse.ArgumentParser(add_help=False)
    ComvintOptions._add_argparse_args(parser)
    values = options.view_as(ComvintOptions).get_all_options()
    return {a.dest: values.get(a.dest) for a in parser._actions if a.dest not in OPERATIONAL}


class FlinkJavaOptions(PipelineOptions):
    """Options of Beam's Flink runner (Java) that Beam's Python SDK does not declare; passed through to it."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument(
            "--execution_mode_for_batch",
            default=None,
            choices=("PIPELINED", "PIPELINED_FORCED", "BATCH", "BATCH_FORCED"),
            help="Flink: how a batch job's exchanges run; run_flink.sh uses BATCH_FORCED (blocking "
            "exchanges: the job runs stage by stage in bounded network memory, and a lost "
            "TaskManager reruns only what it held)",
        )
