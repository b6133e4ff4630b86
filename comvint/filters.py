"""Quality filters: small pure predicates over an instruction record, each with a reason code.

:func:`check` runs them in order and returns the first reason that applies
(None: the record passes). Thresholds live in :class:`FilterConfig`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

_BOX = re.compile(r"\[\s*\d+(?:\.\d+)?\s*(?:,\s*\d+(?:\.\d+)?\s*){3}\]|\b[XY]:\s*\d+|\b(?:width|height):\s*\d+", re.I)
_ID = re.compile(r"\b[er]:\d+\b")
_THE = r"\b(?:the|these|this|those)\s+"
# Annotations, boxes and region descriptions are never in the picture; "captions" may be (subtitles, a
# sign's caption), so only the source's phrasings count: "according to the caption", "the caption says".
_META = re.compile(
    r"\bbounding box(?:es)?\b|" + _THE + r"(?:annotations?|region descriptions?)\b"
    r"|\b(?:according to|based on|in|from)\s+(?:the|these|this|those)\s+(?:given\s+|provided\s+)?captions?\b"
    + "|"
    + _THE
    + r"(?:given|provided|above|following)\s+captions?\b"
    + "|"
    + _THE
    + r"captions?\s+(?:says?|mentions?|describes?|states?|provided|given|above)\b",
    re.I,
)


@dataclasses.dataclass(frozen=True)
class FilterConfig:
    max_instruction_chars: int = 600
    max_answer_chars: int = 1000


Predicate = Callable[[dict[str, Any], FilterConfig], bool]


def leaks_coordinates(r: dict[str, Any], cfg: FilterConfig) -> bool:
    """Box coordinates or annotation ids in the instruction or answer."""
    return any(_BOX.search(t) or _ID.search(t) for t in (r["instruction"], r["answer"]))


def mentions_annotations(r: dict[str, Any], cfg: FilterConfig) -> bool:
    """Talks about "the caption"/"the annotations" instead of the image."""
    return any(_META.search(t) for t in (r["instruction"], r["answer"]))


def empty_instruction(r: dict[str, Any], cfg: FilterConfig) -> bool:
    return not r["instruction"].strip()


def empty_answer(r: dict[str, Any], cfg: FilterConfig) -> bool:
    return not str(r["answer"]).strip()


def long_instruction(r: dict[str, Any], cfg: FilterConfig) -> bool:
    return len(r["instruction"]) > cfg.max_instruction_chars


def long_answer(r: dict[str, Any], cfg: FilterConfig) -> bool:
    return len(r["answer"]) > cfg.max_answer_chars


def repeated_options(r: dict[str, Any], cfg: FilterConfig) -> bool:
    options = [" ".join(o.lower().split()) for o in r.get("options") or []]
    return r["format"] == "multiple_choice" and (len(options) != 4 or len(set(options)) < len(options))


def answer_not_in_options(r: dict[str, Any], cfg: FilterConfig) -> bool:
    if r["format"] != "multiple_choice":
        return False
    options, index = r.get("options") or [], r.get("answer_index")
    return not (isinstance(index, int) and 0 <= index < len(options) and options[index] == r["answer"])


def bool_not_yes_no(r: dict[str, Any], cfg: FilterConfig) -> bool:
    return r["format"] == "bool" and r["answer"] not in ("yes", "no")


FILTERS: tuple[tuple[str, Predicate], ...] = (
    ("quality_empty_instruction", empty_instruction),
    ("quality_empty_answer", empty_answer),
    ("quality_long_instruction", long_instruction),
    ("quality_long_answer", long_answer),
    ("quality_leaks_coordinates", leaks_coordinates),
    ("quality_mentions_annotations", mentions_annotations),
    ("quality_mc_repeated_options", repeated_options),
    ("quality_mc_answer_not_in_options", answer_not_in_options),
    ("quality_bool_not_yes_no", bool_not_yes_no),
)


def check(record: dict[str, Any], cfg: FilterConfig = FilterConfig()) -> str | None:
    """The first filter's reason code that rejects ``record``, or None."""
    return next((reason for reason, predicate in FILTERS if predicate(record, cfg)), None)
