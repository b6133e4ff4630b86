"""What the engine makes in each stage: round-0 questions, a hop per complication, closed formats."""

from __future__ import annotations

from typing import Any

from comvint.engine import realise as en
from comvint.engine.forms import (
    FIELDS,
    KNOWLEDGE_TYPE,
    SUPERLATIVE,
    axis_of,
    comparison,
    description,
    hidden_plural,
    it_is,
    item,
    pick,
    question,
    shuffled,
    that,
)
from comvint.engine.program import Chain, Clause, chain_of, fact_value, participants
from comvint.engine.scene import AXES, Thing, clear

EMPTY_CLOSED = {"bool_positive": "", "bool_negative": "", "mc_question": "", "correct_option": "", "distractors": ["", "", ""],
                "bool_positive_grounding": [], "bool_negative_grounding": [], "mc_grounding": []}


def _with_facts(things: dict[str, Thing]) -> list[Thing]:
    return [t for t in things.values() if t.obj and any(fact_value(t.obj, f) for f in FIELDS)]


def _first_comparison(a: Thing, candidates: list[Thing], axes: list[str], key: Any) -> Clause | None:
    for other in candidates:
        for axis in axes:
            step = comparison(a, other, axis, f"{key}|{other.id}")
            if step is not None:
                return step
    return None


def synthesize(things: dict[str, Thing], family: str, topic: str | None, n: int, key: str) -> list[dict[str, Any]]:
    """Up to n round-0 questions: counts and comparisons (cross-modal), or a fact reached through a
    comparison (outside knowledge: the topic object first)."""
    chains: list[Chain] = []
    used: set[str] = set()
    ordered = shuffled(list(things.values()), key, "things")
    if family == "outside_knowledge":
        targets = shuffled(_with_facts(things), key, "facts")
        targets.sort(key=lambda t: t.obj != topic)  # the topic object first
        for k, target in enumerate(targets[: n * 4]):
            step = _first_comparison(target, [t for t in ordered if t.id != target.id], shuffled(list(AXES), key, k), key)
            winner = things[step.args[0]] if step else None
            fields = [f for f in shuffled(FIELDS, key, target.id) if winner and fact_value(winner.obj, f)]
            if not fields or winner.obj in {c.ask.args[1] for c in chains}:
                continue
            chains.append(Chain((step,), Clause("fact", (winner.id, winner.obj, fields[0]))))
            if len(chains) == n:
                break
    else:
        groups = [t for t in ordered if t.count > 1 and t.plural]
        if groups:
            chains.append(Chain((Clause("count", (groups[0].id,), value=groups[0].count),)))
        coloured = colour_chain(ordered, things, key)
        if coloured is not None:
            chains.append(coloured)
            used.update(coloured.steps[0].args)
        axes = shuffled(list(AXES), key, "axes")
        for k, a in enumerate(ordered):
            if len(chains) >= n:
                break
            step = _first_comparison(a, [b for b in ordered[k + 1 :] if b.id not in used], [axes[len(chains) % 3]], key)
            if step is not None:
                chains.append(Chain((step,)))
                used.update(step.args)
    return [item(c, things) for c in chains[:n]]


def _colours_differ(step: Clause, things: dict[str, Thing]) -> bool:
    """A colour question about a comparison's winner needs the image only if the two differ in colour."""
    a, b = (things[x] for x in step.args)
    return a.colour is not None and b.colour is not None and a.colour != b.colour


def colour_chain(ordered: list[Thing], things: dict[str, Thing], key: str) -> Chain | None:
    """Of two things of different colours, the one a comparison picks: what colour is it?"""
    coloured = [t for t in ordered if t.colour]
    for k, a in enumerate(coloured):
        for b in coloured[k + 1 :]:
            if a.colour == b.colour:
                continue
            step = _first_comparison(a, [b], shuffled(list(AXES), key, "colour"), key)
            if step is not None:
                return Chain((step,), Clause("attr", (step.args[0], things[step.args[0]].colour)))
    return None


def complicate(grounding: list[str], things: dict[str, Thing], key: str) -> tuple[dict[str, Any], str] | None:
    """One more hop through the previous answer, and the kind of hop (knowledge type); None if none fits."""
    chain = chain_of(grounding)
    if chain is None or any(a not in things for a in participants(chain)):
        return None
    focus, last_axis = things[chain.focus()], axis_of(chain.steps[-1].rel) if chain.steps[-1].rel != "count" else None
    new = [t for t in shuffled(list(things.values()), key, "hop") if t.id not in participants(chain)]
    axes = [a for a in shuffled(list(AXES), key, "axis") if a != last_axis]
    if chain.ask is not None and chain.ask.rel == "attr":  # a new comparison first: the colour is then the winner's
        for other in (t for t in new if t.colour and t.colour != focus.colour):
            for axis in axes:
                step = comparison(focus, other, axis, key)
                if step is not None:
                    hop = Chain((*chain.steps, step), Clause("attr", (step.args[0], things[step.args[0]].colour)))
                    return item(hop, things), KNOWLEDGE_TYPE[axis]
        return None
    if chain.ask is not None:  # a new comparison before the fact: the fact is then about whichever wins
        field = chain.ask.args[2]
        for other in (t for t in new if fact_value(t.obj, field) and t.obj != focus.obj):
            for axis in axes:
                step = comparison(focus, other, axis, key)
                if step is not None:
                    winner = things[step.args[0]]
                    hop = Chain((*chain.steps, step), Clause("fact", (winner.id, winner.obj, field)))
                    return item(hop, things), KNOWLEDGE_TYPE[axis]
        return None
    if chain.steps[-1].rel != "count" and _colours_differ(chain.steps[-1], things) and pick((True, False, False), key, "colour"):
        return item(Chain(chain.steps, Clause("attr", (focus.id, focus.colour))), things), "visual"
    if focus.obj and pick((True, False), key, "fact") and chain.steps[-1].rel != "count":
        fields = [f for f in shuffled(FIELDS, key, "field") if fact_value(focus.obj, f)]
        if fields:
            return item(Chain(chain.steps, Clause("fact", (focus.id, focus.obj, fields[0]))), things), KNOWLEDGE_TYPE[fields[0]]
    for other in new:
        for axis in axes:
            step = comparison(focus, other, axis, key)
            if step is not None:
                return item(Chain((*chain.steps, step)), things), KNOWLEDGE_TYPE[axis]
    return None


def _bool(chain: Chain, things: dict[str, Thing], claim: Clause) -> str:
    """A yes/no question asking whether ``claim`` (the chain's last step, or a fact) is true."""
    before = chain.steps[:-1] if claim.rel not in ("fact", "attr") else chain.steps
    if claim.rel == "count":
        group = things[claim.args[0]]
        return f"Are there {en.count_word(claim.value)} {en.group_phrase(group)} in the picture?"
    if claim.rel == "attr":
        return f"Take {description(before, things)}: {it_is(before[-1], things)} {claim.args[1]}?"
    if claim.rel == "fact":
        field = claim.args[2]
        value = fact_value(claim.args[1], field)
        verb = en.FIELD[field][0]
        return f"Take {description(before, things)}: {it_is(before[-1], things)} {verb} {value}?"
    a, b = things[claim.args[0]], things[claim.args[1]]
    if not before:
        return f"{'Are' if a.plural else 'Is'} {a.name} {en.THAN[claim.rel]} {b.name}?"
    it = that(before[-1], things)
    subject, obj = (it, b.name) if a.id == before[-1].args[0] else (a.name, it)
    plural = a.plural if a.id != before[-1].args[0] else hidden_plural(before[-1], things)
    return f"Take {description(before, things)}. {'Are' if plural else 'Is'} {subject} {en.THAN[claim.rel]} {obj}?"


def _false_claim(chain: Chain, things: dict[str, Thing], key: str) -> Clause | None:
    """The chain's last claim made false: the comparison reversed, a wrong count, another object's fact,
    the other candidate's colour."""
    if chain.ask is not None and chain.ask.rel == "attr":
        other = things[next(a for a in chain.steps[-1].args if a != chain.focus())]
        return Clause("attr", (chain.focus(), other.colour))
    if chain.ask is not None:
        field, focus = chain.ask.args[2], things[chain.focus()]
        value = fact_value(focus.obj, field)
        for other in shuffled(list(things.values()), key, "false"):
            other_value = fact_value(other.obj, field)
            if other_value and other_value != value:
                return Clause("fact", (focus.id, other.obj, field))
        return None
    last = chain.steps[-1]
    if last.rel == "count":
        return Clause("count", last.args, value=last.value + 1)
    return Clause(last.rel, (last.args[1], last.args[0]))


def _options(chain: Chain, things: dict[str, Thing], key: str) -> tuple[str, str, list[str], list[str]] | None:
    """(question, correct option, three distractors, their clauses): distractors from the same image, each clearly wrong."""
    last = chain.steps[-1]
    if chain.ask is not None and chain.ask.rel == "attr":
        colour = chain.ask.args[1]
        others = list(dict.fromkeys(t.colour for t in shuffled(list(things.values()), key, "mc") if t.colour and t.colour != colour))
        if len(others) < 3:
            return None
        return (question(chain, things), colour, others[:3],
                [str(Clause("attr", (chain.focus(), c), negated=True)) for c in others[:3]])
    if chain.ask is not None:
        field, focus = chain.ask.args[2], things[chain.focus()]
        value = fact_value(focus.obj, field)
        wrong: dict[str, str] = {}
        for other in shuffled(list(things.values()), key, "mc"):
            other_value = fact_value(other.obj, field)
            if other_value and other_value != value and other_value not in wrong:
                wrong[other_value] = str(Clause("fact", (focus.id, other.obj, field), negated=True))
        if len(wrong) < 3:
            return None
        values = list(wrong)[:3]
        return question(chain, things), value, values, [wrong[v] for v in values]
    if last.rel == "count":
        n = last.value
        counts = [m for m in (n + 1, n + 2, n - 1, n + 3) if m >= 1][:3]
        return (question(chain, things), en.count_word(n), [en.count_word(m) for m in counts],
                [str(Clause("count", last.args, negated=True, value=m)) for m in counts])
    winner = things[last.args[0]]
    beaten = [t for t in shuffled(list(things.values()), key, "mc") if t.id != winner.id and clear(last.rel, winner, t)]
    beaten.sort(key=lambda t: t.id != last.args[1])  # the thing it was compared with first
    if len(beaten) < 3:
        return None
    before = chain.steps[:-1]
    lead = f"Take {description(before, things)}. " if before else ""
    wording = f"Which of these is {SUPERLATIVE[last.rel]}?"
    return (lead + wording, winner.name, [t.name for t in beaten[:3]],
            [str(Clause(last.rel, (winner.id, t.id))) for t in beaten[:3]])


def reformulate(grounding: list[str], things: dict[str, Thing], key: str) -> dict[str, Any]:
    """Bool yes, Bool no and multiple choice asking what the open question asks, each with the clauses
    that make its answer right (the judge re-checks them); empty fields where a format does not apply."""
    chain = chain_of(grounding)
    if chain is None or any(a not in things for a in participants(chain)):
        return dict(EMPTY_CLOSED)
    true_claim = chain.ask if chain.ask is not None else chain.steps[-1]
    false_claim = _false_claim(chain, things, key)
    if false_claim is None:
        return dict(EMPTY_CLOSED)
    prefix = [str(c) for c in (chain.steps if chain.ask is not None else chain.steps[:-1])]
    closed = {
        "bool_positive": _bool(chain, things, true_claim), "bool_positive_grounding": chain.clauses,
        "bool_negative": _bool(chain, things, false_claim),
        "bool_negative_grounding": [*prefix, str(Clause(false_claim.rel, false_claim.args, True, false_claim.value))],
    }
    options = _options(chain, things, key)
    if options is None:
        return {**EMPTY_CLOSED, **closed}
    mc_question, correct, distractors, wrong = options
    return {**closed, "mc_question": mc_question, "correct_option": correct, "distractors": distractors,
            "mc_grounding": list(dict.fromkeys([*chain.clauses, *wrong]))}
