"""Helpers for tests and benches: never imported by the job itself."""

from __future__ import annotations

import json
import pathlib
import threading
import zlib
from collections.abc import Callable, Iterable
from typing import Any

from comvint.estimate import MESSAGE_TOKENS, REPLY_TOKENS
from comvint.images import image_tokens
from comvint.testing.fake_openai import pictures_of, schema_value

VARYING = ("stats.json", "report.html")  # both hold latencies, so two equal runs differ there


def output_bytes(
    root: pathlib.Path, folders: Iterable[str] | None = None, skip: Iterable[str] = VARYING
) -> dict[str, bytes]:
    """Every file a run wrote under ``root`` (or only under its ``folders``), by relative path, minus ``skip`` names."""
    tops = [root / f for f in folders] if folders is not None else [root]
    skipped = set(skip)
    return {
        str(p.relative_to(root)): p.read_bytes()
        for top in tops
        for p in sorted(top.rglob("*"))
        if p.is_file() and p.name not in skipped
    }


def openai_flags(base_url: str, *extra: str, model: str = "fake") -> list[str]:
    """The job's flags for the OpenAI path against a fake endpoint at ``base_url``, then ``extra``."""
    return ["--llm", "openai", "--llm_base_url", base_url, "--llm_model", model, *extra]


def cache_entries(cache_dir: pathlib.Path) -> int:
    """How many replies a run's ``--cache_dir`` holds (``<key[:2]>/<key>.json``; the Batch API ledger is apart)."""
    return sum(1 for _ in cache_dir.glob("??/*.json"))


def message_text(content: Any) -> str:
    """The text of a message (the text parts of one that also carries a picture)."""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if part.get("type") == "text")
    return str(content)


class ModelLikeFake:
    """A responder with a model's habits (seeded by the request): 3 items, some judge refusals, some empty
    complications; it counts requests and prompt tokens."""

    def __init__(self, count: Callable[[str], int]) -> None:
        self.count, self.requests, self.prompt_tokens = count, 0, 0
        self._lock = threading.Lock()  # the fake server answers from several threads

    def __call__(self, body: dict) -> str:
        text = sum(self.count(message_text(m["content"])) + MESSAGE_TOKENS for m in body["messages"]) + REPLY_TOKENS
        tokens = text + sum(image_tokens(body["model"], p.width, p.height, detail) for p, detail in pictures_of(body))
        with self._lock:
            self.requests += 1
            self.prompt_tokens += tokens
        schema = body["response_format"]["json_schema"]
        seed = json.dumps(body["messages"], sort_keys=True)
        roll = zlib.crc32(seed.encode()) % 100
        value = schema_value(schema["schema"], seed)
        name = schema["name"]
        if name == "synthesized":
            value["items"] = [
                schema_value(schema["schema"]["properties"]["items"]["items"], f"{seed}{k}") for k in range(3)
            ]
        elif name == "verdict":
            value["verdict"] = "no" if roll < 20 else "yes"
        elif name == "complicated" and roll < 14:
            value["instruction"] = ""
        return json.dumps(value)
