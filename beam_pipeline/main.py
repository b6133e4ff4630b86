"""``python -m beam_pipeline.main [flags] [Beam options]``: run the ComVint job."""

from __future__ import annotations

import json
import logging
import sys
import time

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineResult

from beam_pipeline import io
from beam_pipeline.options import ComvintOptions
from beam_pipeline.pipeline import build_pipeline
from beam_pipeline.report import REPORT_FILE, SAMPLE_DIR
from comvint.stats import AccountingError
from comvint.summary import format_summary

# Beam's DirectRunner first tries to download the Prism runner; the in-process
# FnApiRunner needs no network, so it is the local default.
LOCAL_RUNNER = "FnApiRunner"


def make_options(argv: list[str] | None) -> PipelineOptions:
    """Parse flags; pin the offline local runner when none is chosen."""
    options = PipelineOptions(argv)
    standard = options.view_as(StandardOptions)
    if not standard.runner or standard.runner == "DirectRunner":
        standard.runner = LOCAL_RUNNER
    return options


def run(argv: list[str] | None = None) -> PipelineResult:
    """Build and run the job; block until it finishes (unless the runner is remote and async)."""
    options = make_options(argv)
    result = build_pipeline(options).run()
    result.wait_until_finish()
    return result


OUTPUT_DIRS = ("instructions", "rejected", "failures", "annotations", "export/llava", "export/messages", "export/trl",
               "export/avro", "export/parquet", SAMPLE_DIR)


def written_outputs(output: str) -> list[tuple[str, str]]:
    """(what, where) of every output the run left under ``output``."""
    found = []
    for name in OUTPUT_DIRS:
        files = FileSystems.match([io.join(output, name, "*")])[0].metadata_list
        if files:
            found.append((f"{name}/", f"{io.join(output, name)} ({len(files)} file{'s' if len(files) > 1 else ''})"))
    return found + [(n, io.join(output, n)) for n in ("stats.json", REPORT_FILE) if io.exists(io.join(output, n))]


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
    stats_path = io.join(output, "stats.json")
    if not io.exists(stats_path):
        return None
    return format_summary(json.loads(io.read_text(stats_path)), written_outputs(output), wall_s)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("beam_pipeline").setLevel(logging.INFO)
    argv, start = sys.argv[1:], time.monotonic()
    try:
        result = run(argv)
    except Exception as err:
        message = accounting_error(err)
        if message is None:
            raise
        print(f"ComVint run FAILED: accounting identity broken: {message.splitlines()[0]}", file=sys.stderr)
        sys.exit(2)
    summary = summarize(argv, time.monotonic() - start) if str(result.state) == "DONE" else None
    if summary:
        print(summary)
    print(json.dumps({"state": str(result.state)}))


if __name__ == "__main__":
    main()
