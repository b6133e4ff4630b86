"""In-memory stores for tests and benches: the cache's and the Batch API ledger's, in dicts."""

from __future__ import annotations


class MemoryStore:
    """A cache store in a dict (:class:`comvint.llm.cache.Store`)."""

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

    def replace(self, key: str, value: str) -> None:
        self.data[key] = value


class MemoryLedgerStore:
    """A Batch API ledger store in a dict (:class:`comvint.llm.batch.LedgerStore`)."""

    def __init__(self) -> None:
        self.files: dict[str, str] = {}

    def names(self) -> list[str]:
        return sorted(self.files)

    def read(self, name: str) -> str | None:
        return self.files.get(name)

    def write(self, name: str, text: str) -> None:
        self.files[name] = text
