"""The contract between a stage and the generic stage runner.

A stage is two pure halves around the LLM call, each handed an item and, beside it, the annotation record
of the item's image: ``calls(item, ann)`` builds the requests (messages + JSON schema, and the context the
offline engine answers from), and ``handle(item, ann, replies)`` turns the validated replies into output records,
each tagged ``ok`` (goes on), ``rejected`` (dropped on purpose, with a reason),
``failed``, or ``skipped`` (the stage had nothing to make of an item that stays
where it is, e.g. a question with no entity to swap: counted, not an output). A reply that is valid JSON but unusable
raises ParseError.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from comvint.llm.redact import redact
from comvint.llm.runner import Call, Outcome
from comvint.records import Failure

OK, REJECTED, FAILED, SKIPPED = "ok", "rejected", "failed", "skipped"
MAX_DETAIL, MAX_RAW = 2_000, 20_000  # characters of an error detail and of a raw reply a dead letter keeps
Emit = tuple[str, Any]


class ParseError(ValueError):
    """A schema-valid reply whose content cannot be used; ``reason`` is a code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


class Stage(Protocol):
    name: str

    def calls(self, item: Any, ann: Any) -> list[Call]: ...

    def handle(self, item: Any, ann: Any, replies: list[dict[str, Any]]) -> Iterable[Emit]: ...


def item_identity(item: Any) -> tuple[str, str, str | None]:
    """(source, image_id, item_id) of an annotation record or instruction dict."""
    return item["source"], item["image_id"], item.get("id")


def failure(stage: str, item: Any, reason: str, detail: str = "", raw: str | None = None) -> Failure:
    """The dead letter of an item; what the endpoint sent (error detail, raw reply) with any key masked."""
    source, image_id, item_id = item_identity(item)
    raw = redact(raw)
    return Failure(
        stage,
        reason,
        source,
        image_id=image_id,
        item_id=item_id,
        detail=(redact(detail) or "")[:MAX_DETAIL],
        raw_response=raw[:MAX_RAW] if raw else raw,
    )


def handle_outcomes(stage: Stage, item: Any, ann: Any, outcomes: list[Outcome]) -> list[Emit]:
    """Everything one item becomes: its stage's records, or one failure with the raw reply."""
    for outcome in outcomes:
        if outcome.reason is not None:
            return [(FAILED, failure(stage.name, item, outcome.reason, outcome.detail, outcome.raw))]
    try:
        return list(stage.handle(item, ann, [o.reply for o in outcomes]))
    except ParseError as err:
        raw = "\n".join(o.raw or "" for o in outcomes)
        return [(FAILED, failure(stage.name, item, f"{stage.name}_{err.reason}", err.detail, raw))]
