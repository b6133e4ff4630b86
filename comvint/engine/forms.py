"""The text of a chain: its open question (several phrasings), its answer, and its closed formats.

Every choice of phrasing comes from a seeded hash of the chain, so the same inputs give the same text.
A later step names the earlier pick by the comparison that made it ("whichever of the dog and the
bike is further to the left"), never by its name, so the reader has to look.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from comvint.engine import realise
from comvint.engine.program import Chain, Clause, answer_value, pick_of, value_of
from comvint.engine.scene import COLOURS, MATERIALS, Scene, Thing, same_answer, singular, wordnet
from comvint.records import stable_int

KNOWLEDGE_TYPE = {
    "position": "visual",
    "size": "physical",
    "count": "visual",
    "relation": "commonsense",
    "colour": "visual",
    "material": "physical",
    "kind": "knowledge-base",
}
TOPIC = {"colour": "Objects, Materials and Clothing", "material": "Objects, Materials and Clothing"}
CATEGORY_TOPIC = {
    "a person": "People and Everyday Life",
    "food": "Cooking and Food",
    "a vehicle": "Vehicles and Transportation",
}


def pick(options: Sequence[Any], *key: Any) -> Any:
    return options[stable_int(*key) % len(options)]


def shuffled(items: Sequence[Any], *key: Any) -> list[Any]:
    return sorted(items, key=lambda x: stable_int(*key, getattr(x, "id", x)))


def _other(chain: Chain, k: int, scene: Scene) -> Thing:
    """The new thing step k (k > 0) compares the earlier pick with."""
    step = chain.steps[k]
    return scene.things[step.args[1] if step.args[0] == pick_of(chain.steps[k - 1]) else step.args[0]]


def named_pair(step: Clause, scene: Scene) -> tuple[Thing, Thing]:
    """A comparison's two things in the order the text names them (seeded, so the winner is not always first)."""
    a, b = scene.things[step.args[0]], scene.things[step.args[1]]
    return (a, b) if stable_int(str(step), "order") % 2 else (b, a)


def first_pick(chain: Chain, scene: Scene) -> str:
    """The first step's pick as a noun phrase: "whichever of the dog and the bike is further to the left",
    "what the man is holding"."""
    step = chain.steps[0]
    if step.rel == "rel":
        subject = scene.things[step.args[0]]
        return f"what {subject.the} {realise.be(subject)} {step.args[1].replace('_', ' ')}"
    x, y = named_pair(step, scene)
    return f"whichever of {x.the} and {y.the} is {realise.RELATION[step.rel]}"


def lead(chain: Chain, upto: int, scene: Scene) -> str:
    """Sentences that make steps ``0..upto`` pick a thing without naming it: "Take whichever of the dog and
    the bike is further to the left. Then take whichever of that one and the bench is higher up in the picture."."""
    parts = [f"Take {first_pick(chain, scene)}."]
    for k in range(1, upto + 1):
        parts.append(
            f"Then take whichever of that one and {_other(chain, k, scene).the} is "
            f"{realise.RELATION[chain.steps[k].rel]}."
        )
    return " ".join(parts)


def _ask_text(ask: str, target: str, key: str) -> str:
    if ask == "colour":
        return pick((f"What colour is {target}?", f"Look at {target}: what colour is it?"), key)
    if ask == "material":
        return pick((f"What is {target} made of?", f"Look at {target}: what material is it made of?"), key)
    return pick((f"What kind of thing is {target}?", f"Look at {target}: what general kind of thing is it?"), key)


def question(chain: Chain, scene: Scene) -> str:
    """The open question, in one of several phrasings."""
    t, last, key, n = scene.things, chain.steps[-1], "|".join(map(str, chain.steps)), len(chain.steps)
    if chain.ask:
        if n == 1:
            return _ask_text(chain.ask, first_pick(chain, scene), key)
        return f"{lead(chain, n - 1, scene)} {_ask_text(chain.ask, 'that one', key)}"
    if last.rel == "count":
        group = realise.group_phrase(t[last.args[0]])
        return pick(
            (
                f"How many {group} are there in the picture?",
                f"How many {group} can you see?",
                f"Count the {group}: how many are there?",
            ),
            key,
        )
    if last.rel == "rel":
        subject = t[last.args[0]]
        verb = last.args[1].replace("_", " ")
        # no "what is it ...": the subject is a person or an animal
        return f"What {realise.be(subject)} {subject.the} {verb}?"
    relation = realise.RELATION[last.rel]
    if n == 1:
        x, y = named_pair(last, scene)
        return pick(
            (
                f"Which is {relation}: {x.the} or {y.the}?",
                f"Of {x.the} and {y.the}, which one is {relation}?",
                f"Looking at {x.the} and {y.the}, which appears {relation}?",
            ),
            key,
        )
    other = _other(chain, n - 1, scene)
    return f"{lead(chain, n - 2, scene)} " + pick(
        (f"Which is {relation}: that one or {other.the}?", f"Of that one and {other.the}, which is {relation}?"), key
    )


def explanation(chain: Chain, scene: Scene) -> str:
    """Every step as a statement."""
    t, parts = scene.things, []
    for step in chain.steps:
        if step.rel == "count":
            parts.append(f"there are {realise.count_word(step.value)} {realise.group_phrase(t[step.args[0]])}")
        elif step.rel == "rel":
            parts.append(realise.relation_statement(t[step.args[0]], step.args[1].replace("_", " "), t[step.args[2]]))
        else:
            parts.append(realise.statement(step.rel, t[step.args[0]], t[step.args[1]]))
    value = answer_value(chain, scene)
    if chain.ask and value.lower() not in t[chain.focus()].name.split():  # not "the white jacket is white"
        parts.append(realise.property_statement(chain.ask, t[chain.focus()], value))
    return realise.cap(realise.join(parts)) + "."


def short_answer(chain: Chain, scene: Scene) -> str:
    value = answer_value(chain, scene)
    if chain.ask:
        return value
    if chain.steps[-1].rel == "count":
        return realise.count_word(int(value))
    return scene.things[value].the


def item(chain: Chain, scene: Scene) -> dict[str, Any]:
    topic = ""
    if chain.ask == "kind":
        topic = CATEGORY_TOPIC.get(answer_value(chain, scene), "Science and Technology")
    elif chain.ask:
        topic = TOPIC[chain.ask]
    return {
        "instruction": question(chain, scene),
        "answer": f"{realise.cap(short_answer(chain, scene))}. {explanation(chain, scene)}",
        "grounding": chain.clauses(scene),
        "knowledge_topic": topic,
    }


# ---- closed formats --------------------------------------------------------------------------------


def normal(value: str) -> str:
    """A value as compared for sameness: no article, singular ("the coast" and "coasts" are one answer)."""
    words = [w for w in value.lower().split() if w not in ("a", "an", "the")]
    return " ".join(singular(w)[0] for w in words)


def other_values(ask: str, chain: Chain, scene: Scene, key: str) -> list[str]:
    """Values of the same type as the answer, most telling first: the other candidate's, then the image's, then any."""
    answer = answer_value(chain, scene)
    loser = scene.things[chain.steps[-1].args[1]] if chain.steps[-1].rel not in ("rel", "count") else None
    pool = [value_of(ask, loser)] if loser else []
    pool += [value_of(ask, t) for t in shuffled(list(scene.things.values()), key, "values")]
    fixed = {
        "colour": sorted(COLOURS - {"grey", "tan", "beige", "gold", "silver"}),
        "material": sorted(set(MATERIALS.values())),
        "kind": list(wordnet()["categories"]),
    }[ask]
    pool += shuffled(fixed, key, "fixed")
    values: list[str] = []
    for v in pool:
        if v and not any(same_answer(ask, v, w) or normal(v) == normal(w) for w in (answer, *values)):
            values.append(v)
    return values


def bool_question(chain: Chain, scene: Scene, claim: Clause) -> str:
    """A yes/no question asking whether ``claim`` holds of the chain's pick (or, for a comparison, of its two
    things)."""
    t, n = scene.things, len(chain.steps)
    if claim.rel == "count":
        return f"Are there {realise.count_word(claim.value)} {realise.group_phrase(t[claim.args[0]])} in the picture?"
    if claim.rel in ("colour", "material", "kind"):
        value = claim.args[1]
        predicate = {"colour": value, "material": f"made of {value}", "kind": f"a kind of {realise.bare(value)}"}[
            claim.rel
        ]
        if n == 1:
            return f"Is {first_pick(chain, scene)} {predicate}?"
        return f"{lead(chain, n - 1, scene)} Is that one {predicate}?"
    if claim.rel == "rel":
        subject = t[claim.args[0]]
        verb = claim.args[1].replace("_", " ")
        return f"{'Are' if subject.plural else 'Is'} {subject.the} {verb} {t[claim.args[2]].the}?"
    a, b = t[claim.args[0]], t[claim.args[1]]
    if n == 1:
        return f"{'Are' if a.plural else 'Is'} {a.the} {realise.RELATION[claim.rel]} than {b.the}?"
    focus = pick_of(chain.steps[-2])
    before = lead(chain, n - 2, scene)
    if a.id == focus:
        return f"{before} Is that one {realise.RELATION[claim.rel]} than {b.the}?"
    return f"{before} {'Are' if a.plural else 'Is'} {a.the} {realise.RELATION[claim.rel]} than that one?"
