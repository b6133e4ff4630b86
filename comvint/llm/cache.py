"""Content-addressed, write-once response cache over a pluggable key-value store."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Protocol

CACHE_FORMAT = "comvint-cache-v1"


class Store(Protocol):
    """Where cache entries live (a local directory, ``gs://``...)."""

    def get(self, key: str) -> str | None: ...

    def put_if_absent(self, key: str, value: str) -> bool: ...


class MemoryStore:
    """An in-process store (tests, and the offline backend's no-op cache)."""

    fast = True

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def get(self, key: str) -> str | None:
        return self.data.get(key)

    def put_if_absent(self, key: str, value: str) -> bool:
        if key in self.data:
            return False
        self.data[key] = value
        return True


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def without_pictures(message: dict[str, Any]) -> dict[str, Any]:
    """A message with each image part's data replaced by a placeholder (the key names pictures by their hash)."""
    content = message.get("content")
    if not isinstance(content, list):
        return message
    return {**message, "content": [{"type": "image_url"} if isinstance(p, dict) and p.get("type") == "image_url" else p for p in content]}


def cache_key(
    *,
    base_url: str | None,
    model: str,
    messages: list[dict[str, Any]],
    params: dict[str, Any],
    schema: dict[str, Any] | None,
    response_format: str,
    prompt_version: str,
    images: tuple[str, ...] = (),
) -> str:
    """sha256 of everything that can change the answer, spelled out field by field. A picture is named by its
    original file's SHA-256 and the settings it was sent with (``images``), not by its re-encoded bytes."""
    material = {
        "format": CACHE_FORMAT,
        "base_url": base_url or "",
        "model": model,
        "messages": [without_pictures(m) for m in messages],
        "params": params,
        "schema": schema,
        "response_format": response_format,
        "prompt_version": prompt_version,
        **({"images": list(images)} if images else {}),
    }
    return hashlib.sha256(canonical_json(material).encode("utf-8")).hexdigest()


class ResponseCache:
    """Raw replies by key; an entry is written once and never changed."""

    def __init__(self, store: Store) -> None:
        self._store = store
        # A store that answers in microseconds (memory, local disk) is called on the event loop;
        # a remote one (gs://) from a thread, so a slow round trip never stalls the other calls.
        self.fast = bool(getattr(store, "fast", False))

    def get(self, key: str) -> dict[str, Any] | None:
        text = self._store.get(key)
        if text is None:
            return None
        try:
            entry = json.loads(text)
        except json.JSONDecodeError:
            return None  # a torn or foreign file: treated as a miss and rewritten by nobody
        return entry if entry.get("format") == CACHE_FORMAT else None

    def put(self, key: str, reply: dict[str, Any]) -> bool:
        """Store ``reply`` (text, finish_reason, usage, model) unless the key exists."""
        return self._store.put_if_absent(key, canonical_json({"format": CACHE_FORMAT, **reply}))
