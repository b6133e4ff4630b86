"""Benchmark helpers: run a command as a child process and measure wall time and peak memory."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import psutil


def _rss(p: psutil.Process) -> int:
    try:
        return p.memory_info().rss
    except psutil.Error:
        return 0


def tree_rss(proc: psutil.Process) -> tuple[int, int]:
    """Resident memory (bytes) of a process with all its descendants, and of the descendants alone."""
    children = sum(_rss(c) for c in proc.children(recursive=True))
    return _rss(proc) + children, children


def measure(args: list[str], poll: float = 0.05) -> dict[str, Any]:
    """Run ``python <args>``: wall seconds, peak RSS in MB (whole process tree; and of the child
    processes alone, when there are any) and the last JSON line it prints."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, text=True)
    proc, peak, peak_children = psutil.Process(child.pid), 0, 0
    while child.poll() is None:
        try:
            total, children = tree_rss(proc)
            peak, peak_children = max(peak, total), max(peak_children, children)
        except psutil.Error:
            pass
        time.sleep(poll)
    out = child.stdout.read()
    wall = time.perf_counter() - start
    if child.returncode:
        raise RuntimeError(f"{args} failed with {child.returncode}")
    lines = [line for line in out.splitlines() if line.startswith("{")]
    measured = {"wall_s": round(wall, 2), "peak_rss_mb": round(peak / 2**20, 1)}
    if peak_children:
        measured["peak_worker_rss_mb"] = round(peak_children / 2**20, 1)
    return {**measured, **(json.loads(lines[-1]) if lines else {})}


def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("inf")
