"""Helpers for pipeline tests: a local TestPipeline and output readers."""

from __future__ import annotations

import glob
import json
import os

from apache_beam.testing.test_pipeline import TestPipeline


def local_pipeline() -> TestPipeline:
    """A TestPipeline on the in-process runner (never the Prism download)."""
    return TestPipeline(runner="FnApiRunner")


def read_jsonl(output: str, name: str) -> list[dict]:
    rows = []
    for path in sorted(glob.glob(os.path.join(output, name, "*.jsonl"))):
        with open(path, encoding="utf-8") as handle:
            rows += [json.loads(line) for line in handle]
    return rows


def read_stats(output: str) -> dict:
    with open(os.path.join(output, "stats.json"), encoding="utf-8") as handle:
        return json.load(handle)
