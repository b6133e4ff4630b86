"""Question programs: a chain of steps over the scene, written as the grounding clauses the judge re-derives.

A chain starts with a comparison of two things (``left_of(W,L)``: of W and L, W is further to
the left; the winner comes first) or a count (``count(e:4)=2``). Each further comparison
involves the previous step's winner (the *focus*) and one new thing, so a later round can only
be answered through the earlier answer. A chain ends by asking which thing won, how many there
are, a knowledge-table fact about the focus (``fact(r:7,clock,used_for)``), or its colour
(``attr(e:2,brown)``, asked only when the two things compared last differ in colour). Negated clauses
(``not larger(a,b)``, ``not count(g)=3``, ``not fact(r:7,bicycle,used_for)``) state what a Bool
"no" question or a multiple-choice distractor claims, and must be clearly false.
"""

from __future__ import annotations

import dataclasses
import re

from comvint.engine.scene import INVERSE, knowledge

_CLAUSE = re.compile(r"^(not )?(\w+)\(([^)]*)\)(?:=(\d+))?$")
RELATIONS = tuple(INVERSE)
ASKS = ("fact", "attr")  # what a chain may finally ask of its focus: a table fact, or the colour it has


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


def fact_value(obj: str | None, field: str) -> str | None:
    """The knowledge table's value of ``field`` for ``obj`` (None when it has none)."""
    return knowledge()["objects"].get(obj or "", {}).get(field) or None


@dataclasses.dataclass(frozen=True)
class Chain:
    """A question program: its steps (count or comparison clauses) and what it finally asks."""

    steps: tuple[Clause, ...]
    ask: Clause | None = None  # a fact clause; None: ask which thing won (or how many)

    @property
    def clauses(self) -> list[str]:
        return [str(c) for c in (*self.steps, *([self.ask] if self.ask else []))]

    def focus(self) -> str:
        """The id of the thing the last step picked (the counted group, or the comparison's winner)."""
        return self.steps[-1].args[0]


def chain_of(grounding: list[str]) -> Chain | None:
    """Read a chain back from its clauses (None if they are not one)."""
    clauses = [parse(c) for c in grounding]
    if not clauses or any(c is None or c.negated for c in clauses):
        return None
    ask = clauses[-1] if clauses[-1].rel in ASKS else None
    steps = tuple(clauses[:-1] if ask else clauses)
    if not steps or any(c.rel not in RELATIONS and c.rel != "count" for c in steps):
        return None
    if any(s.rel == "count" for s in steps[1:]) or any(steps[k - 1].args[0] not in s.args for k, s in enumerate(steps) if k):
        return None  # a count only starts a chain; every later step involves the previous winner
    return Chain(steps, ask)


def participants(chain: Chain) -> set[str]:
    return {a for s in chain.steps for a in s.args if a.startswith(("e:", "r:"))}
