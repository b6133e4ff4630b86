"""``python -m beam_pipeline.main [flags] [Beam options]``: run the ComVint job."""

from __future__ import annotations

import json
import logging
import sys

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineResult

from beam_pipeline.pipeline import build_pipeline

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


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("beam_pipeline").setLevel(logging.INFO)
    result = run(sys.argv[1:])
    print(json.dumps({"state": str(result.state)}))


if __name__ == "__main__":
    main()
