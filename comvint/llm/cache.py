"""Content-addressed, write-once response cache over a pluggable key-value store."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, Protocol

CACHE_FORMAT = "comvint-cache-v1"
MAX_ENTRY_BYTES = 8 << 20  # an entry holds one reply; a store reads no more than this
_LOGGER = logging.getLogger(__name__)


class Store(Protocol):
    """Where cache entries live (a local directory, ``gs://``...)."""

    def get(self, key: str) -> str | None: ...

    def put_if_absent(self, key: str, value: str) -> bool: ...


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def without_pictures(message: dict[str, Any]) -> dict[str, Any]:
    """A message with each image part's data replaced by a placeholder (the key names pictures by their hash)."""
    content = message.get("content")
    if not isinstance(content, list):
        return message
    return {
        **message,
        "content": [
            {"type": "image_url"} if isinstance(p, dict) and p.get("type") == "image_url" else p for p in content
        ],
    }


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
    """Raw replies by key; an entry is written once, and rewritten only when what is there cannot be used.

    Each entry carries its key: an entry copied over another one (another request's valid reply) is a
    miss, said in the log, and never replayed. An entry that is torn, foreign, of another key or not a
    file (the store refuses those) is a miss and is rewritten by the next reply for its key, so it is not
    paid for on every rerun.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        # A store that answers in microseconds (memory, local disk) is called on the event loop;
        # a remote one (gs://) from a thread, so a slow round trip never stalls the other calls.
        self.fast = bool(getattr(store, "fast", False))

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            text = self._store.get(key)
        except UnusableEntry as err:
            _LOGGER.warning("Cache entry %s is not used: %s", key, err)
            return None
        if text is None:
            return None
        try:
            entry = json.loads(text)
        except json.JSONDecodeError:
            return None  # a torn or foreign file: a miss, rewritten by the next reply for this key
        if not isinstance(entry, dict) or entry.get("format") != CACHE_FORMAT:
            return None
        if entry.get("key", key) != key:  # entries written before keys were stored have none
            _LOGGER.warning(
                "Cache entry %s holds the reply of another request (%s): not replayed", key, str(entry["key"])[:64]
            )
            return None
        return entry

    def put(self, key: str, reply: dict[str, Any]) -> bool:
        """Store ``reply`` (text, finish_reason, usage, model) unless a usable entry exists for the key."""
        text = canonical_json({"format": CACHE_FORMAT, "key": key, **reply})
        if self._store.put_if_absent(key, text):
            return True
        if self.get(key) is None and hasattr(self._store, "replace"):  # torn, foreign, another key's, not a file
            self._store.replace(key, text)
            return True
        return False


class UnusableEntry(Exception):
    """A cache entry the store will not read: not a regular file, or larger than a reply can be."""
