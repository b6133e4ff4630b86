"""The topic entity of a Visual Genome image: its most long-tail object by document frequency over the
whole corpus (the paper's IDF rule), computed from the corpus's own object names.

An image's "document" is the set of its objects' identities: the WordNet synset ``objects.json`` gives
(``keyboard.n.01``), else the head word of the object's name; without ``objects.json``, the head words
of its region phrases. The topic is the identity with the fewest images, shown by the name the image
uses for it; synset identities are preferred, since a misspelt name is rare for the wrong reason.
"""

from __future__ import annotations

from typing import Any

from comvint.prompts.render import head_word


def object_terms(ann: dict[str, Any]) -> dict[str, str]:
    """``{identity: name}`` of the objects of one Visual Genome record (its document for document frequency)."""
    terms: dict[str, str] = {}
    listed = [o for o in ann.get("objects") or [] if not o.get("unlisted") and o.get("names")]
    if listed:
        for obj in listed:
            name = obj["names"][0]
            key = obj["synsets"][0] if obj.get("synsets") else head_word(name)
            if key:
                terms.setdefault(key, name)
        return terms
    for region in ann.get("regions", []):
        head = head_word(region["phrase"])
        if head:
            terms.setdefault(head, head)
    return terms


def rarest(terms: dict[str, str], df: dict[str, int]) -> str | None:
    """The name of the identity seen in the fewest images (synsets first; ties by identity), or None."""
    if not terms:
        return None
    synsets = [k for k in terms if "." in k]
    key = min(synsets or terms, key=lambda k: (df.get(k, 0), k))
    return terms[key]
