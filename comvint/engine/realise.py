"""English for the engine's questions and answers: names, number agreement, relations, properties."""

from __future__ import annotations

import functools

from comvint.engine.scene import NUMBERS, PAIR_NOUNS, Thing, inflector

RELATION = {  # the comparative a "which" question asks about
    "left_of": "further to the left",
    "right_of": "further to the right",
    "above": "higher up in the picture",
    "below": "lower down in the picture",
    "larger": "larger in the picture",
    "smaller": "smaller in the picture",
}
SUPERLATIVE = {
    "left_of": "furthest to the left",
    "right_of": "furthest to the right",
    "above": "highest up in the picture",
    "below": "lowest down in the picture",
    "larger": "largest in the picture",
    "smaller": "smallest in the picture",
}


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def be(thing: Thing) -> str:
    return "are" if thing.plural else "is"


@functools.lru_cache(maxsize=64)
def count_word(n: int) -> str:
    return inflector().number_to_words(n)


@functools.lru_cache(maxsize=8192)
def plural_noun(noun: str) -> str:
    return noun if noun in PAIR_NOUNS else inflector().plural_noun(noun)  # "shorts", not "shortss"


@functools.lru_cache(maxsize=8192)
def with_article(noun: str) -> str:
    return inflector().a(noun)


def group_phrase(thing: Thing) -> str:
    """A counted group without its number: "two open windows" -> "open windows"."""
    words = thing.name.split()
    if words and words[0] in NUMBERS:
        words = words[1:]
    return plural_noun(thing.noun) if words in ([], [thing.noun]) else " ".join(words)


def statement(rel: str, a: Thing, b: Thing) -> str:
    """ "the dog is further to the left than the bike" (with agreement)."""
    return f"{a.the} {be(a)} {RELATION[rel]} than {b.the}"


def relation_statement(subject: Thing, pred: str, obj: Thing) -> str:
    return f"{subject.the} {be(subject)} {pred} {obj.the}"


def property_statement(ask: str, thing: Thing, value: str) -> str:
    """ "the dog is brown" / "the door is made of wood" / "a bike is a kind of vehicle"."""
    if ask == "colour":
        return f"{thing.the} {be(thing)} {value}"
    if ask == "material":
        return f"{thing.the} {be(thing)} made of {value}"
    kind = plural_noun(thing.noun) if thing.plural else with_article(thing.noun)
    return f"{kind} {'are' if thing.plural else 'is'} a kind of {bare(value)}"


def bare(value: str) -> str:
    """A value without its article: "a vehicle" -> "vehicle"."""
    return value.removeprefix("a ").removeprefix("an ")


def join(parts: list[str]) -> str:
    """ "a", "a and b", "a, b, and c" (semicolons when a part has a comma of its own)."""
    if len(parts) < 3:
        return " and ".join(parts)
    sep = "; " if any("," in p for p in parts) else ", "
    return sep.join(parts[:-1]) + f"{sep}and {parts[-1]}"
