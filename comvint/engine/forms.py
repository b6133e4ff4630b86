"""The engine's question forms: what to ask of a scene, each round, and in closed formats.

Every choice (which things, which axis, which phrasing) comes from a seeded hash of the item,
so the same inputs always give the same questions. The text comes from :mod:`realise`; the
clauses come from :mod:`program`, and the judge re-derives them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from comvint.engine import realise as en
from comvint.engine.program import Chain, Clause, fact_value
from comvint.engine.scene import AXES, Thing, clear, knowledge
from comvint.records import stable_int as rank

FIELDS = ("used_for", "made_of", "found_in")
SUPERLATIVE = {"left_of": "furthest to the left", "right_of": "furthest to the right", "above": "highest up in the picture",
               "below": "lowest down in the picture", "larger": "largest in the picture", "smaller": "smallest in the picture"}
KNOWLEDGE_TYPE = {"horizontal": "visual", "vertical": "visual", "size": "physical", "used_for": "commonsense",
                  "made_of": "knowledge-base", "found_in": "knowledge-base"}


def pick(options: Sequence[Any], *key: Any) -> Any:
    return options[rank(*key) % len(options)]


def shuffled(items: Sequence[Any], *key: Any) -> list[Any]:
    return sorted(items, key=lambda x: rank(*key, getattr(x, "id", x)))


def axis_of(rel: str) -> str:
    return next(axis for axis, rels in AXES.items() if rel in rels)


def comparison(a: Thing, b: Thing, axis: str, key: Any) -> Clause | None:
    """A clear comparison of a and b on an axis, winner first (the relation picked by the key), or None."""
    for rel in shuffled(AXES[axis], key, axis):
        if clear(rel, a, b):
            return Clause(rel, (a.id, b.id))
        if clear(rel, b, a):
            return Clause(rel, (b.id, a.id))
    return None


# ---- text of a chain ---------------------------------------------------------------------------


def _pair(step: Clause, things: dict[str, Thing]) -> tuple[Thing, Thing]:
    """The two things of a first comparison in the order the question names them (seeded)."""
    w, loser = things[step.args[0]], things[step.args[1]]
    return (w, loser) if rank(str(step), "order") % 2 else (loser, w)


def _other(step: Clause, focus: str, things: dict[str, Thing]) -> Thing:
    return things[step.args[1] if step.args[0] == focus else step.args[0]]


def hidden_plural(step: Clause, things: dict[str, Thing]) -> bool | None:
    """Whether the thing a step picked is plural, as far as the reader can know it (None: not without the answer)."""
    numbers = {things[a].plural for a in step.args if a in things}
    return numbers.pop() if len(numbers) == 1 else None


def that(step: Clause, things: dict[str, Thing]) -> str:
    """How a later step names the thing an earlier one picked, never giving away which it was by its number."""
    plural = hidden_plural(step, things)
    return "your pick" if plural is None else "those" if plural else "that one"


def it_is(step: Clause, things: dict[str, Thing]) -> str:
    """ "is it" / "are they" / "is your pick" for the thing a step picked (number agreement without a giveaway)."""
    plural = hidden_plural(step, things)
    return "is your pick" if plural is None else "are they" if plural else "is it"


def description(steps: Sequence[Clause], things: dict[str, Thing]) -> str:
    """How to reach the focus: "whichever of the dog and the bike is further to the left, then ..."."""
    first = steps[0]
    if first.rel == "count":
        parts = [things[first.args[0]].name]
    else:
        x, y = _pair(first, things)
        parts = [f"whichever of {x.name} and {y.name} is {en.RELATION[first.rel]}"]
    for k, step in enumerate(steps[1:], start=1):
        other = _other(step, steps[k - 1].args[0], things)
        parts.append(f"whichever of {that(steps[k - 1], things)} and {other.name} is {en.RELATION[step.rel]}")
    return ", then ".join(parts)


def question(chain: Chain, things: dict[str, Thing]) -> str:
    """The open question of a chain, in one of several phrasings."""
    *before, last = chain.steps
    key = "|".join(chain.clauses)
    if chain.ask is not None and chain.ask.rel == "attr":
        desc = description(chain.steps, things)
        return pick((f"Take {desc}: what colour {it_is(last, things)}?", f"What colour is {desc}?"), key)
    if chain.ask is not None:
        verb = en.FIELD[chain.ask.args[2]][0]
        desc = description(chain.steps, things)
        return pick((f"Take {desc}: what {it_is(last, things)} {verb}?", f"What is {desc} {verb}?"), key)
    if last.rel == "count":
        plural = en.group_phrase(things[last.args[0]])
        return pick((f"How many {plural} are there in the picture?", f"How many {plural} can you see?",
                     f"Count the {plural} in the picture: how many are there?"), key)
    if not before:
        x, y = _pair(last, things)
        relation = en.RELATION[last.rel]
        return pick((f"Which is {relation}: {x.name} or {y.name}?", f"Looking at {x.name} and {y.name}, which one is {relation}?",
                     f"Of {x.name} and {y.name}, which appears {relation}?"), key)
    other = _other(last, before[-1].args[0], things)
    desc, relation, it = description(before, things), en.RELATION[last.rel], that(before[-1], things)
    return pick((f"Take {desc}. Which is {relation}: {it} or {other.name}?",
                 f"Start from {desc}. Of {it} and {other.name}, which is {relation}?"), key)


def explanation(chain: Chain, things: dict[str, Thing]) -> str:
    """Every step as a statement: "the dog is further to the left than the bike, and ..."."""
    parts = []
    for step in chain.steps:
        if step.rel == "count":
            group = things[step.args[0]]
            parts.append(f"there are {en.count_word(step.value)} {en.plural_noun(group)}")
        else:
            parts.append(en.statement(step.rel, things[step.args[0]], things[step.args[1]]))
    if chain.ask is not None and chain.ask.rel == "fact":
        focus = things[chain.focus()]
        parts.append(en.fact_statement(focus, chain.ask.args[2], fact_value(focus.obj, chain.ask.args[2])))
    return en.cap(en.join(parts)) + "."


def answer(chain: Chain, things: dict[str, Thing]) -> str:
    """The short answer first, then why."""
    last = chain.steps[-1]
    if chain.ask is not None and chain.ask.rel == "attr":
        short = chain.ask.args[1]
    elif chain.ask is not None:
        short = fact_value(things[chain.focus()].obj, chain.ask.args[2])
    elif last.rel == "count":
        short = en.count_word(last.value)
    else:
        short = things[last.args[0]].name
    return f"{en.cap(short)}. {explanation(chain, things)}"


def item(chain: Chain, things: dict[str, Thing]) -> dict[str, Any]:
    topic = knowledge()["objects"][things[chain.focus()].obj]["topic"] if chain.ask is not None and chain.ask.rel == "fact" else ""
    return {"instruction": question(chain, things), "answer": answer(chain, things), "grounding": chain.clauses,
            "knowledge_topic": topic}
