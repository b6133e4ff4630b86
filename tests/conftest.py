"""Shared fixtures: paths to the bundled sample and to the real samples beside the repo."""

from __future__ import annotations

import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = REPO / "data"
REAL = pathlib.Path(os.environ.get("COMVINT_REAL_SAMPLES", REPO.parent / "shared" / "real_samples"))


@pytest.fixture
def real_samples() -> pathlib.Path:
    """The real dataset files in ../shared/real_samples (the test is skipped without them)."""
    if not REAL.is_dir():
        pytest.skip(f"no real samples at {REAL}")
    return REAL
