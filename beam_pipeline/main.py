"""``python -m beam_pipeline.main [flags] [Beam options]``: run the ComVint job."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions, _BeamArgumentParser
from apache_beam.runners.runner import PipelineResult

from beam_pipeline.exports import FORMATS
from beam_pipeline.files import exists, join, read_text
from beam_pipeline.lake import LAKE_FILE
from beam_pipeline.options import SAMPLE_IMAGES, ComvintOptions
from beam_pipeline.pipeline import build_pipeline
from beam_pipeline.report import REPORT_FILE, SAMPLE_DIR
from comvint.card import CARD_FILE
from comvint.lake import LakeError
from comvint.llm.config import ConfigError
from comvint.stats import AccountingError
from comvint.summary import format_summary

# Beam's DirectRunner first tries to download the Prism runner; the in-process
# FnApiRunner needs no network, so it is the local default.
LOCAL_RUNNER = "FnApiRunner"


class UsageError(ValueError):
    """An argument no option of the job or of Beam knows (a typo would otherwise run the defaults)."""


def unknown_flags(argv: list[str]) -> list[str]:
    """The flags in ``argv`` that no registered pipeline options class (ComVint's or Beam's) defines."""
    parser = _BeamArgumentParser(allow_abbrev=False)
    for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)  # how Beam itself collects every option (PipelineOptions.get_all_options)
    _, unknown = parser.parse_known_args(argv)
    return [arg.split("=", 1)[0] for arg in unknown if arg.startswith("-")]


def make_options(argv: list[str] | None) -> PipelineOptions:
    """Parse flags (refusing unknown ones); pin the offline local runner when none is chosen."""
    unknown = unknown_flags(list(argv or []))
    if unknown:
        raise UsageError(f"unknown argument(s) {', '.join(unknown)}: see --help for the job's flags and Beam's")
    options = PipelineOptions(argv)
    standard = options.view_as(StandardOptions)
    if not standard.runner or standard.runner == "DirectRunner":
        standard.runner = LOCAL_RUNNER
    job = options.view_as(ComvintOptions)
    if not job.flickr_root and not job.vg_regions and job.image_root is None:
        job.image_root = SAMPLE_IMAGES  # the bundled sample comes with its pictures
    return options


def run(argv: list[str] | None = None) -> PipelineResult:
    """Build and run the job; block until it finishes (unless the runner is remote and async)."""
    options = make_options(argv)
    result = build_pipeline(options).run()
    result.wait_until_finish()
    return result


OUTPUT_DIRS = ("instructions", "rejected", "failures", "annotations", *(f"export/{f}" for f in FORMATS), SAMPLE_DIR)


def written_outputs(output: str) -> list[tuple[str, str]]:
    """(what, where) of every output the run left under ``output``."""
    found = []
    for name in OUTPUT_DIRS:
        files = FileSystems.match([join(output, name, "*")])[0].metadata_list
        if files:
            found.append((f"{name}/", f"{join(output, name)} ({len(files)} file{'s' if len(files) > 1 else ''})"))
    files = ("stats.json", REPORT_FILE, CARD_FILE, LAKE_FILE)
    return found + [(n, join(output, n)) for n in files if exists(join(output, n))]


def accounting_error(err: BaseException) -> str | None:
    """The message of an :class:`AccountingError` however the runner wrapped it, else None."""
    seen = err
    while seen is not None:
        if isinstance(seen, AccountingError):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    text = str(err)
    return text[text.index("AccountingError") :].split("\n")[0] if "AccountingError" in text else None


def summarize(argv: list[str], wall_s: float) -> str | None:
    """The end-of-run summary, or None when the run left no stats.json here (e.g. a Dataflow dry run)."""
    output = make_options(argv).view_as(ComvintOptions).output
    stats_path = join(output, "stats.json")
    if not exists(stats_path):
        return None
    return format_summary(json.loads(read_text(stats_path)), written_outputs(output), wall_s)


def help_text() -> str:
    """``--help``: every job flag with its default and meaning, by group."""
    parser = argparse.ArgumentParser(
        prog="python -m beam_pipeline.main",
        usage="%(prog)s [flags] [Beam pipeline options]",
        description="ComVint: complex visual-reasoning instruction data from image annotations, on Apache Beam. "
        "With no flag it runs the whole method on the bundled sample with the offline engine and writes ./output/.",
        epilog="Beam's own pipeline options are accepted too (--runner, --project, --region, --temp_location, "
        "--num_workers, --max_num_workers, --direct_running_mode, --direct_num_workers, ...): see "
        "https://beam.apache.org/documentation/programming-guide/#configuring-pipeline-options and, for Dataflow, "
        "run_dataflow.sh. The README documents each flag's default and the method's decisions.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ComvintOptions._add_argparse_args(parser)
    return parser.format_help()


def main(argv: list[str] | None = None) -> None:
    """Run the job with ``argv`` (default: the command line), print its final state, then its summary."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("beam_pipeline", "comvint"):
        logging.getLogger(name).setLevel(logging.INFO)
    argv, start = sys.argv[1:] if argv is None else list(argv), time.monotonic()
    if "-h" in argv or "--help" in argv:
        print(help_text())
        return
    try:
        result = run(argv)
    except (UsageError, ConfigError, LakeError) as err:
        print(f"comvint: error: {err}", file=sys.stderr)
        sys.exit(2)
    except Exception as err:
        message = accounting_error(err)
        if message is None:
            raise
        print(f"ComVint run FAILED: accounting identity broken: {message.splitlines()[0]}", file=sys.stderr)
        sys.exit(2)
    summary = summarize(argv, time.monotonic() - start) if str(result.state) == "DONE" else None
    print(json.dumps({"state": str(result.state)}))
    if summary:  # the last word: what the run did and where it put it
        print(summary)


if __name__ == "__main__":
    main()
