"""English for the engine's questions and answers: names, number agreement, relations, knowledge clauses."""

from __future__ import annotations

from comvint.engine.scene import Thing, inflector

RELATION = {  # the comparative a "which" question asks about, and the predicate of a statement
    "left_of": "further to the left", "right_of": "further to the right",
    "above": "higher up in the picture", "below": "lower down in the picture",
    "larger": "larger in the picture", "smaller": "smaller in the picture",
}
THAN = {
    "left_of": "further to the left than", "right_of": "further to the right than",
    "above": "higher up in the picture than", "below": "lower down in the picture than",
    "larger": "larger in the picture than", "smaller": "smaller in the picture than",
}
FIELD = {  # (question verb, statement verb) of a knowledge field
    "used_for": ("typically used for", "typically used for"),
    "made_of": ("usually made of", "usually made of"),
    "found_in": ("usually found in", "usually found in"),
}


def be(thing: Thing) -> str:
    return "are" if thing.plural else "is"


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def count_word(n: int) -> str:
    return inflector().number_to_words(n)


def plural_noun(thing: Thing) -> str:
    return inflector().plural_noun(thing.noun)


def kind_of(thing: Thing) -> str:
    """The bare kind with an article, for a general statement: "a clock", "dogs"."""
    return plural_noun(thing) if thing.plural else inflector().a(thing.noun)


def statement(rel: str, a: Thing, b: Thing) -> str:
    """ "the dog is further to the left than the bike" (with agreement)."""
    return f"{a.name} {be(a)} {THAN[rel]} {b.name}"


def fact_statement(thing: Thing, field: str, value: str) -> str:
    """ "a clock is typically used for telling the time" / "dogs are usually found in homes and parks"."""
    verb = "are" if thing.plural else "is"
    return f"{kind_of(thing)} {verb} {FIELD[field][1]} {value}"


def join(names: list[str]) -> str:
    return inflector().join(names)
