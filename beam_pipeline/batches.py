"""``python -m beam_pipeline.batches {list,cancel} --cache_dir DIR [--llm_base_url URL]``: a run's Batch API batches.

``list`` prints the ledger (no network). ``cancel`` asks the endpoint to cancel every batch of the ledger
still in flight there (the key comes from ``OPENAI_API_KEY``); lines a cancelled batch had finished are
kept when a run reads the batch back, and a rerun submits the others again.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from beam_pipeline.stores import FileSystemsLedgerStore
from comvint.llm.batch import Ledger, cancel_outstanding
from comvint.llm.config import LLMConfig


def list_rows(ledger: Ledger) -> list[str]:
    """One line per batch file of the ledger: endpoint, stage, model, batch id, lines and status."""
    rows = ["endpoint\tstage\tmodel\tbatch\tlines\tstatus"]
    for e in sorted(ledger.entries(), key=lambda e: (e.submitted_at, e.input_file_id)):
        batch = e.batch_id or f"(not created: {e.input_file_id})"
        rows.append(f"{e.endpoint}\t{e.stage}\t{e.model}\t{batch}\t{len(e.custom_ids)}\t{e.status}")
    return rows


async def cancel(ledger: Ledger, base_url: str | None) -> list[tuple[str, str]]:
    import openai

    from comvint.llm.batch import endpoint_of

    key = os.environ.get("OPENAI_API_KEY")
    if not key:
        raise SystemExit("cancel needs OPENAI_API_KEY in the environment")
    client = openai.AsyncOpenAI(api_key=key, base_url=base_url)
    try:
        return await cancel_outstanding(ledger, client, endpoint_of(LLMConfig(backend="openai", base_url=base_url)))
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m beam_pipeline.batches", description=__doc__.splitlines()[0].split(": ", 1)[1]
    )
    parser.add_argument("command", choices=("list", "cancel"))
    parser.add_argument(
        "--cache_dir", required=True, help="the run's --cache_dir (local or gs://); the ledger is in batches/"
    )
    parser.add_argument("--llm_base_url", default=None, help="the run's --llm_base_url (default: OpenAI's)")
    args = parser.parse_args(argv)
    ledger = Ledger(FileSystemsLedgerStore(args.cache_dir))
    if args.command == "list":
        print("\n".join(list_rows(ledger)))
        return
    cancelled = asyncio.run(cancel(ledger, args.llm_base_url))
    for batch_id, status in cancelled:
        print(f"{batch_id}\t{status}")
    print(f"{len(cancelled)} batch(es) asked to cancel", file=sys.stderr)


if __name__ == "__main__":
    main()
