"""What the engine makes in each stage: round-0 questions, a hop per complication, closed formats.

Round 0 offers one question of each kind the image supports (position, size, count, relation, colour,
material, kind), rarest kinds first, each kind at most once per image. A hop adds a comparison
through the previous pick, or asks a property of the pick; it is made only if every step matters
(:func:`program.matters`) and the question stays short (:data:`MAX_WORDS`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from comvint.engine import forms, realise
from comvint.engine.forms import KNOWLEDGE_TYPE, bool_question, item, other_values, shuffled
from comvint.engine.program import (
    ASKS,
    AXES,
    COMPARE,
    Chain,
    Clause,
    answer_value,
    axis_of,
    chain_of,
    matters,
    participants,
    value_of,
    winner,
)
from comvint.engine.realise import SUPERLATIVE
from comvint.engine.scene import COLOURS, MATERIALS, Scene, Thing, entangled, holds, same_answer

MAX_WORDS = 30  # the longest question made (LLaVA's complex questions have about 12 words)
MAX_PAIRS = 400  # pairs of things tried per image and kind
EMPTY_CLOSED = {
    "bool_positive": "",
    "bool_negative": "",
    "mc_question": "",
    "correct_option": "",
    "distractors": ["", "", ""],
    "bool_positive_grounding": [],
    "bool_negative_grounding": [],
    "mc_grounding": [],
}
# Never asked of a relation's object: its verb says it ("what the man is wearing" is a garment, "what he is driving"
# a vehicle), so the answer would come from the question's words.
TOLD_BY_VERB = ("kind",)
PREFERENCE = {
    "cross_modal": ("count", "relation", "colour", "size", "kind", "position"),
    "outside_knowledge": ("kind", "material", "colour", "relation", "size", "position"),
}


def short_enough(chain: Chain, scene: Scene) -> bool:
    return len(forms.question(chain, scene).split()) <= MAX_WORDS


PROPERTY_WORDS = {"colour": COLOURS, "material": frozenset(MATERIALS)}


def names_no_property(chain: Chain, scene: Scene) -> bool:
    """A colour or material question whose text names no colour or material: "what colour is whichever of the white
    head wraps and the pink shirts is lower?" is half answered by its own words."""
    words = PROPERTY_WORDS.get(chain.ask or "")
    return not words or not words & set(re.findall(r"[a-z]+", forms.question(chain, scene).lower()))


def pairs(scene: Scene, key: str) -> Iterator[tuple[Thing, Thing]]:
    things = [t for t in shuffled(list(scene.things.values()), key, "things") if not t.background]
    made = 0
    for k, a in enumerate(things):
        for b in things[k + 1 :]:
            if made >= MAX_PAIRS:
                return
            if not entangled(a, b):
                made += 1
                yield a, b


def compare(a: Thing, b: Thing, axes: list[str], scene: Scene, key: str) -> Clause | None:
    """A clear comparison of a and b on the first axis that has one, winner first (the wording seeded)."""
    for axis in axes:
        rel = forms.pick(AXES[axis], key, a.id, b.id, axis)
        won = winner(rel, a, b, scene)
        if won is not None:
            return Clause(rel, (won.id, b.id if won is a else a.id))
    return None


def round_zero(kind: str, scene: Scene, used: set[str], key: str) -> Chain | None:
    """One round-0 chain of a kind, about things no earlier question of the image used; None if none fits."""
    if kind == "count":
        for t in shuffled(list(scene.things.values()), key, "count"):
            if t.count and t.plural and t.id not in used:
                return Chain((Clause("count", (t.id,), value=t.count),))
        return None
    if kind == "relation":
        objects: dict[tuple[str, str], set[str]] = {}
        for s, p, o in scene.relations:
            objects.setdefault((s, p), set()).add(o)
        for (s, p), found in shuffled(sorted(objects.items()), key, "rel"):
            if len(found) == 1 and s not in used:
                chain = Chain((Clause("rel", (s, p.replace(" ", "_"), next(iter(found)))),))
                if short_enough(chain, scene):
                    return chain
        return None
    axes = {"size": ["size"], "position": shuffled(["horizontal", "vertical"], key, "axes")}.get(kind) or shuffled(
        list(AXES), key, kind
    )
    for a, b in pairs(scene, f"{key}|{kind}"):
        if a.id in used or b.id in used:
            continue
        if kind in ASKS and (
            not value_of(kind, a) or not value_of(kind, b) or same_answer(kind, value_of(kind, a), value_of(kind, b))
        ):
            continue
        step = compare(a, b, axes, scene, key)
        if step is None:
            continue
        chain = Chain((step,), kind if kind in ASKS else None)
        if matters(chain, scene) and short_enough(chain, scene) and names_no_property(chain, scene):
            return chain
    return None


def synthesize(scene: Scene, family: str, topic: str | None, n: int, key: str) -> list[dict[str, Any]]:
    """Up to n round-0 questions of different kinds (the topic object's questions first, when it has any)."""
    chains: list[Chain] = []
    used: set[str] = set()
    for kind in PREFERENCE[family]:
        if len(chains) >= n:
            break
        chain = round_zero(kind, scene, used, key)
        if chain is not None:
            chains.append(chain)
            used.update(participants(chain))
    if topic:
        chains.sort(key=lambda c: not any(scene.things[a].noun == topic for a in participants(c)))
    return [item(c, scene) for c in chains]


def hops(chain: Chain, scene: Scene, key: str) -> Iterator[Chain]:
    """Every longer chain a complication may make, in a seeded order: a comparison through the pick, or a property of
    it."""
    last = chain.steps[-1]
    focus = scene.things[chain.focus()]
    if chain.ask is None and last.rel in COMPARE:
        loser = scene.things[last.args[1]]
        for ask in shuffled(list(ASKS), key, "ask"):
            mine, theirs = value_of(ask, focus), value_of(ask, loser)
            if mine and theirs and not same_answer(ask, mine, theirs):
                yield Chain(chain.steps, ask)
    if chain.ask is None and last.rel == "rel":
        for ask in shuffled([a for a in ASKS if a not in TOLD_BY_VERB], key, "ask"):
            if value_of(ask, focus):
                yield Chain(chain.steps, ask)
    last_axis = None if last.rel == "rel" else axis_of(last.rel)
    axes = shuffled([a for a in AXES if a != last_axis], key, "axes")
    for other in shuffled(list(scene.things.values()), key, "hop"):
        if other.id in participants(chain) or other.background:
            continue
        step = compare(focus, other, axes, scene, f"{key}|{other.id}")
        if step is not None:
            yield Chain((*chain.steps, step), chain.ask)


def complicate(grounding: list[str], scene: Scene, key: str) -> tuple[dict[str, Any], str] | None:
    """One more step through the previous answer, and the kind of knowledge it adds; None if none matters."""
    chain = chain_of(grounding)
    if chain is None or chain.steps[-1].rel == "count" or any(a not in scene.things for a in participants(chain)):
        return None
    for hop in hops(chain, scene, key):
        if len(hop.steps) > 3:
            continue
        if (
            matters(hop, scene)
            and answer_value(hop, scene) != answer_value(chain, scene)
            and short_enough(hop, scene)
            and names_no_property(hop, scene)
        ):
            return item(hop, scene), KNOWLEDGE_TYPE[hop.kind]
    return None


def _false_claim(chain: Chain, scene: Scene, key: str) -> Clause | None:
    """A claim about the pick that is clearly false but true of another thing (or reversed, for a comparison)."""
    last = chain.steps[-1]
    if chain.ask:
        values = other_values(chain.ask, chain, scene, key)
        return Clause(chain.ask, (chain.focus(), values[0])) if values else None
    if last.rel == "count":
        return Clause("count", last.args, value=last.value + 1)
    if last.rel == "rel":
        wrong = _not_related(chain, scene, key)
        return Clause("rel", (last.args[0], last.args[1], wrong[0])) if wrong else None
    return Clause(last.rel, (last.args[1], last.args[0]))


def _not_related(chain: Chain, scene: Scene, key: str) -> list[str]:
    """Things the relation's subject cannot be doing it to: apart from it, and not named by any relation of it."""
    subject, pred, obj = chain.steps[-1].args
    related = {o for s, _, o in scene.relations if s == subject}
    names, kind = {scene.things[obj].noun}, scene.things[obj].category
    if kind is None:
        return []  # a wrong object must be of the same kind as the right one ("riding the horse", not "riding the man")
    found = []
    for t in shuffled(list(scene.things.values()), key, "unrelated"):
        if (
            t.id not in related
            and t.id != subject
            and not t.background
            and t.noun not in names
            and t.category == kind
            and not entangled(t, scene.things[subject])
        ):
            names.add(t.noun)
            found.append(t.id)
    return found


def plausible_options(chain: Chain, scene: Scene, key: str) -> list[str]:
    """Wrong values of the asked property that the question's words do not rule out: any colour or material, but
    only a kind that some thing the question names has ("a fish" is no option when it names a man and shorts)."""
    values = other_values(chain.ask, chain, scene, key)
    if chain.ask != "kind":
        return values
    named = [value_of("kind", scene.things[p]) for p in participants(chain) if p != chain.focus()]
    return [v for v in values if any(same_answer("kind", v, n) for n in named)]


def _options(chain: Chain, scene: Scene, key: str) -> tuple[str, str, list[str], list[str]] | None:
    """(question, correct option, three distractors, their clauses), or None when the chain has no fitting set."""
    last, t = chain.steps[-1], scene.things
    question = forms.question(chain, scene)
    if chain.ask:
        values = plausible_options(chain, scene, key)[:3]
        if len(values) < 3:
            return None
        return (
            question,
            answer_value(chain, scene),
            values,
            [str(Clause(chain.ask, (chain.focus(), v), negated=True)) for v in values],
        )
    if last.rel == "count":
        counts = [m for m in (last.value + 1, last.value + 2, last.value - 1, last.value + 3) if m >= 1][:3]
        return (
            question,
            forms.short_answer(chain, scene),
            [realise.count_word(m) for m in counts],
            [str(Clause("count", last.args, negated=True, value=m)) for m in counts],
        )
    if last.rel == "rel":
        wrong = _not_related(chain, scene, key)[:3]
        if len(wrong) < 3:
            return None
        return (
            question,
            t[last.args[2]].the,
            [t[w].the for w in wrong],
            [str(Clause("rel", (last.args[0], last.args[1], w), negated=True)) for w in wrong],
        )
    if len(chain.steps) > 1:
        return None  # "which of these" would not say how the earlier pick enters
    won = t[last.args[0]]
    beaten = [x for x in shuffled(list(t.values()), key, "mc") if x.id != won.id and holds(last.rel, won, x, scene)]
    beaten.sort(key=lambda x: x.id != last.args[1])  # the thing it was compared with first
    chosen: list[Thing] = []
    for x in beaten:
        if all(not entangled(x, y) for y in chosen):
            chosen.append(x)
    if len(chosen) < 3:
        return None
    return (
        f"Which of these is {SUPERLATIVE[last.rel]}?",
        won.the,
        [x.the for x in chosen[:3]],
        [str(Clause(last.rel, (x.id, won.id), negated=True)) for x in chosen[:3]],
    )


def reformulate(grounding: list[str], scene: Scene, key: str) -> dict[str, Any]:
    """Bool yes, Bool no and multiple choice asking what the open question asks, each with the clauses that
    make its answer right (the judge re-checks them); empty fields where a format does not apply."""
    chain = chain_of(grounding)
    if chain is None or any(a not in scene.things for a in participants(chain)):
        return dict(EMPTY_CLOSED)
    clauses = chain.clauses(scene)
    true_claim, false_claim = (
        Clause(chain.ask, (chain.focus(), answer_value(chain, scene))) if chain.ask else chain.steps[-1],
        _false_claim(chain, scene, key),
    )
    if false_claim is None:
        return dict(EMPTY_CLOSED)
    prefix = clauses[:-1]
    negated = Clause(false_claim.rel, false_claim.args, True, false_claim.value)
    closed = {
        "bool_positive": bool_question(chain, scene, true_claim),
        "bool_positive_grounding": clauses,
        "bool_negative": bool_question(chain, scene, false_claim),
        "bool_negative_grounding": [*prefix, str(negated)],
    }
    options = _options(chain, scene, key)
    if options is None:
        return {**EMPTY_CLOSED, **closed}
    mc_question, correct, distractors, wrong = options
    return {
        **closed,
        "mc_question": mc_question,
        "correct_option": correct,
        "distractors": distractors,
        "mc_grounding": list(dict.fromkeys([*clauses, *wrong])),
    }
