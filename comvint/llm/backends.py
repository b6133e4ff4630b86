"""Choosing a stage's backend, and reading the API key it needs: the one place the key is read.

The key comes from a secret store (``--llm_api_key_secret``, read by the caller's ``read_secret``) or from the
worker's ``OPENAI_API_KEY``; it is read on the worker, never becomes an option and never reaches a log
(:func:`comvint.llm.redact.remember` masks it in any text that is logged).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from comvint.llm.batch import BatchBackend, Ledger, LedgerStore
from comvint.llm.client import Backend, OfflineBackend, OpenAIBackend
from comvint.llm.config import LLMConfig
from comvint.llm.redact import remember

API_KEY_ENV = "OPENAI_API_KEY"
SecretReader = Callable[[str], str]  # a secret version's name -> its value


def api_key_from_env() -> str:
    """The API key, read from the worker's environment only (never an option)."""
    key = os.environ.get(API_KEY_ENV)
    if not key:
        raise RuntimeError(
            f"--llm openai needs {API_KEY_ENV} in the environment of every worker, or --llm_api_key_secret"
        )
    return key


def api_key(config: LLMConfig, read_secret: SecretReader | None = None) -> str:
    """The key for ``--llm openai``: from the secret store when ``--llm_api_key_secret`` names a version, else
    from ``OPENAI_API_KEY`` (a self-hosted ``--llm_server_cmd`` server without one is sent ``local``)."""
    if config.api_key_secret:
        if read_secret is None:
            raise RuntimeError("--llm_api_key_secret needs a secret reader on this runner")
        key = read_secret(config.api_key_secret)
        if not key:
            raise RuntimeError(f"the secret {config.api_key_secret} is empty")
        return remember(key)
    if config.server_cmd and not os.environ.get(API_KEY_ENV):
        return "local"  # a self-hosted server asks for no key unless it was started with one
    return remember(api_key_from_env())


def make_backend(
    config: LLMConfig,
    read_secret: SecretReader | None = None,
    ledger_store: LedgerStore | None = None,
    endpoint: LLMConfig | None = None,
) -> Backend:
    """The backend ``config`` asks for: the Batch API (its ledger in ``ledger_store``), an OpenAI-compatible
    endpoint (``endpoint``: where requests go when that differs from ``config``, e.g. a worker's own
    server), or the offline engine."""
    if config.mode == "batch":
        if ledger_store is None:
            raise ValueError("--llm_mode batch needs a ledger store")
        return BatchBackend(config, api_key(config, read_secret), Ledger(ledger_store))
    if config.backend == "openai":
        return OpenAIBackend(endpoint or config, api_key(config, read_secret))
    return OfflineBackend()
