"""The engine's judge: every clause re-derived from the boxes and the table, and the answer re-derived from the clauses.

It rejects a clause it cannot re-derive, a relation within the margin, a "no" or a distractor that
is not clearly false, an answer the clauses do not give, and a question its own text answers
(a fact asked about a thing the question names, with no comparison to make first).
"""

from __future__ import annotations

from typing import Any

from comvint.engine import forms
from comvint.engine.program import Clause, chain_of, fact_value, parse
from comvint.engine.scene import INVERSE, MARGIN, Thing, margin


def check(clause: Clause, things: dict[str, Thing]) -> tuple[bool, str]:
    """Does the clause hold (a negated one: is its claim clearly false)? With the evidence."""
    ids = [a for a in clause.args if a.startswith(("e:", "r:"))]
    if not ids or any(a not in things for a in ids):
        return False, "refers to something not in the annotations"
    first = things[ids[0]]
    if clause.rel == "count":
        ok = (first.count == clause.value) != clause.negated
        return ok, f"{first.name}: {first.count} box(es)"
    if clause.rel == "attr":
        claimed = clause.args[1] if len(clause.args) == 2 else None
        ok = first.colour is not None and claimed is not None and (first.colour == claimed) != clause.negated
        return ok, f"{first.name}: {first.colour or 'no colour of its own'}"
    if clause.rel == "fact":
        if len(clause.args) != 3:
            return False, "a fact needs a thing, an object and a field"
        _, obj, field = clause.args
        own, claimed = fact_value(first.obj, field), fact_value(obj, field)
        if own is None or claimed is None:
            return False, f"no table fact {field} for {first.name}"
        ok = (own == claimed) != clause.negated if clause.negated else first.obj == obj
        return ok, f"{first.obj} {field.replace('_', ' ')}: {own}"
    if clause.rel not in INVERSE or len(ids) != 2:
        return False, f"unknown relation {clause.rel}"
    second = things[ids[1]]
    m = margin(clause.rel, first.box, second.box)
    ok = m <= -MARGIN if clause.negated else m >= MARGIN
    why = f"{first.name} {first.box} vs {second.name} {second.box}: {clause.rel} margin {m:+.2f}"
    return ok, why if ok or abs(m) >= MARGIN else why + " (too close to call)"


def _expected_answer(record: dict[str, Any], grounding: list[str], things: dict[str, Thing]) -> str | None:
    """What the clauses say the answer is (None if they say nothing about it)."""
    fmt = record.get("format", "open_ended")
    if fmt == "bool":
        last = parse(grounding[-1]) if grounding else None
        return None if last is None else ("no" if last.negated else "yes")
    chain = chain_of([c for c in grounding if not c.startswith("not ")])
    if chain is None:
        return None
    short = forms.answer(chain, things).split(". ")[0].rstrip(".")
    return short.lower()


def judge(record: dict[str, Any], things: dict[str, Thing]) -> tuple[bool, str]:
    """(passed, evidence) for one record: the clauses, the answer, and the need for the image."""
    grounding = list(record.get("grounding") or [])
    if not grounding:
        return False, "no grounding clause to check the answer against"
    clauses = [parse(c) for c in grounding]
    if any(c is None for c in clauses):
        return False, f"cannot read the clauses {grounding}"
    checks = [check(c, things) for c in clauses]
    evidence = "; ".join(f"{g} -> {'ok' if ok else 'FAILS'} ({why})" for g, (ok, why) in zip(grounding, checks, strict=True))
    if not all(ok for ok, _ in checks):
        return False, evidence
    if clauses[0].rel in ("fact", "attr") and not clauses[0].negated:
        return False, evidence + "; the question names the thing it asks about: its text answers it"
    expected = _expected_answer(record, grounding, things)
    given = str(record.get("answer", "")).lower()
    if expected is None or not given.startswith(expected):
        return False, evidence + f"; the clauses give the answer {expected!r}, not {record.get('answer')!r}"
    return True, evidence
