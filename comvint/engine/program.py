"""Question programs: a chain of steps over the scene, written as the grounding clauses the judge re-derives.

Steps pick a thing: a comparison (``left_of(W,L)``: of W and L, W is further to the left; the winner
first), a stated relation (``rel(S,holding,O)``: the thing S is holding), or a count that ends the chain
(``count(e:4)=2``). Each later comparison involves the previous pick (the *focus*) and one new thing.
A chain ends by asking which thing was picked, or a property of the pick: ``colour(X,red)``,
``material(X,wood)``, ``kind(X,a vehicle)`` (its WordNet category). Negated clauses state what a Bool
"no" question or a distractor claims and must be clearly false. A chain is kept only if every step
matters: picking the other thing at any comparison would change the answer (:func:`matters`).
"""

from __future__ import annotations

import dataclasses
import re

from comvint.engine.scene import Scene, Thing, holds, same_answer

_CLAUSE = re.compile(r"^(not )?(\w+)\(([^()]*)\)(?:=(\d+))?$")
COMPARE = ("left_of", "right_of", "above", "below", "larger", "smaller")
AXES = {"horizontal": ("left_of", "right_of"), "vertical": ("above", "below"), "size": ("larger", "smaller")}
ASKS = ("colour", "material", "kind")


@dataclasses.dataclass(frozen=True)
class Clause:
    rel: str
    args: tuple[str, ...]
    negated: bool = False
    value: int | None = None

    def __str__(self) -> str:
        text = f"{'not ' if self.negated else ''}{self.rel}({','.join(self.args)})"
        return text if self.value is None else f"{text}={self.value}"


def parse(text: str) -> Clause | None:
    match = _CLAUSE.match(text.strip())
    if not match:
        return None
    value = int(match.group(4)) if match.group(4) else None
    return Clause(match.group(2), tuple(a.strip() for a in match.group(3).split(",")), bool(match.group(1)), value)


def axis_of(rel: str) -> str:
    return next(axis for axis, rels in AXES.items() if rel in rels)


def value_of(ask: str, thing: Thing) -> str | None:
    """The property a chain may ask of a thing, as the annotations (or WordNet, for its kind) give it."""
    return {"colour": thing.colour, "material": thing.material, "kind": thing.category}[ask]


def pick_of(step: Clause) -> str:
    """The thing a step picks: a relation's object, a comparison's winner, the counted group."""
    return step.args[2] if step.rel == "rel" else step.args[0]


@dataclasses.dataclass(frozen=True)
class Chain:
    """A question program: its steps and what it finally asks (None: which thing was picked, or how many)."""

    steps: tuple[Clause, ...]
    ask: str | None = None

    def focus(self) -> str:
        """The id of the thing the last step picked."""
        return pick_of(self.steps[-1])

    def clauses(self, scene: Scene) -> list[str]:
        ask = [str(Clause(self.ask, (self.focus(), answer_value(self, scene))))] if self.ask else []
        return [str(c) for c in self.steps] + ask

    @property
    def kind(self) -> str:
        """What the question finally asks: position, size, count, relation, colour, material or kind."""
        if self.ask:
            return self.ask
        last = self.steps[-1]
        return {"count": "count", "rel": "relation"}.get(last.rel) or (
            "size" if axis_of(last.rel) == "size" else "position"
        )


def answer_value(chain: Chain, scene: Scene) -> str:
    """The short answer: the property asked, the count, or the picked thing's id."""
    if chain.ask:
        return value_of(chain.ask, scene.things[chain.focus()]) or ""
    return str(chain.steps[-1].value) if chain.steps[-1].rel == "count" else chain.focus()


def chain_of(grounding: list[str]) -> Chain | None:
    """Read a chain back from its clauses (None if they are not one)."""
    clauses = [parse(c) for c in grounding]
    if not clauses or any(c is None or c.negated for c in clauses):
        return None
    ask = clauses[-1].rel if clauses[-1].rel in ASKS else None
    steps = tuple(clauses[:-1] if ask else clauses)
    if not steps or any(s.rel not in (*COMPARE, "rel", "count") for s in steps):
        return None
    if any(s.rel in ("count", "rel") for s in steps[1:]) or (steps[0].rel == "count" and (len(steps) > 1 or ask)):
        return None  # a count stands alone; a relation only starts a chain
    for k, step in enumerate(steps[1:], start=1):
        if pick_of(steps[k - 1]) not in step.args:
            return None  # every later step involves the previous pick
    return Chain(steps, ask)


def winner(rel: str, a: Thing, b: Thing, scene: Scene) -> Thing | None:
    """Which of a and b the relation picks, when it is clear either way."""
    if holds(rel, a, b, scene):
        return a
    if holds(rel, b, a, scene):
        return b
    return None


def outcome(chain: Chain, scene: Scene, swap_at: int) -> str | None:
    """The chain's answer had step ``swap_at`` (a comparison) picked its other thing; None if that is not clear."""
    focus = scene.things[chain.steps[swap_at].args[1]]
    for j in range(swap_at + 1, len(chain.steps)):
        step, before = chain.steps[j], pick_of(chain.steps[j - 1])  # the pick the question actually made there
        other = scene.things[step.args[1] if step.args[0] == before else step.args[0]]
        if other.id == focus.id:
            return None
        picked = winner(step.rel, focus, other, scene)
        if picked is None:
            return None
        focus = picked
    return value_of(chain.ask, focus) if chain.ask else focus.id


def matters(chain: Chain, scene: Scene) -> bool:
    """Every comparison matters: had it picked its other thing, the answer would be defined and different."""
    answer = answer_value(chain, scene)
    if chain.ask and not answer:
        return False
    for k, step in enumerate(chain.steps):
        if step.rel not in COMPARE:
            continue
        if k == len(chain.steps) - 1 and not chain.ask:
            continue  # the last comparison of a "which" question is the question itself
        alternative = outcome(chain, scene, k)
        if alternative is None or (same_answer(chain.ask, alternative, answer) if chain.ask else alternative == answer):
            return False
    return True


def participants(chain: Chain) -> set[str]:
    return {a for s in chain.steps for a in s.args if a.startswith(("e:", "r:", "o:"))}
