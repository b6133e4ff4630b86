"""English for the engine's questions and answers: names, number agreement, relations, knowledge clauses."""

from __future__ import annotations

import functools

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


@functools.lru_cache(maxsize=64)
def count_word(n: int) -> str:
    return inflector().number_to_words(n)


@functools.lru_cache(maxsize=8192)
def _plural(noun: str) -> str:
    return inflector().plural_noun(noun)


def plural_noun(thing: Thing) -> str:
    return _plural(thing.noun)


def group_phrase(thing: Thing) -> str:
    """A counted group without its number: "two open windows" -> "open windows" (the plural noun if nothing else)."""
    words = thing.phrase.split()
    if words and words[0] in ("two", "three", "four", "five", "several", "many"):
        words = words[1:]
    return " ".join(words) if thing.plural and words else plural_noun(thing)


@functools.lru_cache(maxsize=8192)
def _with_article(noun: str) -> str:
    return inflector().a(noun)


def kind_of(thing: Thing) -> str:
    """The bare kind with an article, for a general statement: "a clock", "dogs"."""
    return plural_noun(thing) if thing.plural else _with_article(thing.noun)


def statement(rel: str, a: Thing, b: Thing) -> str:
    """ "the dog is further to the left than the bike" (with agreement)."""
    return f"{a.name} {be(a)} {THAN[rel]} {b.name}"


def fact_statement(thing: Thing, field: str, value: str) -> str:
    """ "a clock is typically used for telling the time" / "dogs are usually found in homes and parks"."""
    verb = "are" if thing.plural else "is"
    return f"{kind_of(thing)} {verb} {FIELD[field][1]} {value}"


def join(parts: list[str]) -> str:
    """ "a", "a and b", "a, b, and c" (semicolons when a part has a comma of its own)."""
    if len(parts) < 3:
        return " and ".join(parts)
    sep = "; " if any("," in p for p in parts) else ", "
    return sep.join(parts[:-1]) + f"{sep}and {parts[-1]}"
