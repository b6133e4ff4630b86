"""Near-duplicate detection: shingles, MinHash signatures, LSH band keys, and the decisions.

The Beam side (``beam_pipeline/dedup.py``) only groups; every decision is a pure
function here. Two scopes:

* within one image (:func:`dedup_image`): every pair of an image's items is
  compared by exact Jaccard similarity (an image has tens of items, so no
  sketch is needed and recall is exact);
* across the corpus: items with the same normalised question and answer form one group
  (:func:`exact_groups`); the groups' heads get MinHash signatures cut into
  bands; heads sharing a band key meet in one bucket, where candidate pairs
  are verified by exact Jaccard (:func:`bucket_pairs`); the connected
  components of verified pairs are found exactly by union-find (:func:`union`,
  :func:`merge_components`). Within a component, items gather around leaders
  (:func:`cap_cluster`): in order, an item joins the first leader it is a near
  duplicate of, or leads a cluster of its own; at most K items per leader are
  kept. Leaders, not chains: a template drifting one word at a time links the
  whole corpus into one component, but its two ends are different questions.

An item's "order" decides the survivor everywhere: lower round first, then
open-ended before Bool before multiple choice, then id.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np
import orjson

from comvint.records import FLICKR, VISUAL_GENOME, image_key

SHINGLE_CHARS = 5
THRESHOLD = 0.7
NUM_PERM = 64
BANDS = 16
MAX_COMPARE = 32
MAX_LEADERS = 256  # the most recent leaders of a component an item is compared with
SPREAD_BITS = 12  # a band's keys meet under their top 12 bits: 4,096 shuffle keys per band, each many LSH buckets
_PRIME = (1 << 31) - 1
_FORMAT_RANK = {"open_ended": 0, "bool": 1, "multiple_choice": 2}
_NON_WORD = re.compile(r"[^\w]+", re.UNICODE)
EXACT, NEAR, TEMPLATE = "duplicate_exact", "duplicate_near", "template_repeat"
OrderKey = tuple[int, int, str]  # (round, format rank, id)
Member = tuple[int, int, str, str, str]  # order key + (image, normalised text)


def normalise(text: str) -> str:
    """Lower case, punctuation to spaces, whitespace collapsed."""
    return " ".join(_NON_WORD.sub(" ", text.lower()).split())


def grams(norm: str, k: int = SHINGLE_CHARS) -> frozenset[bytes]:
    """The set of ``k``-byte substrings of already normalised text (exact Jaccard compares these)."""
    data = norm.encode("utf-8")
    if len(data) <= k:
        return frozenset([data])
    return frozenset([data[i : i + k] for i in range(len(data) - k + 1)])


def shingles(text: str, k: int = SHINGLE_CHARS) -> frozenset[int]:
    """The set of 32-bit hashes of the ``k``-byte substrings of normalised ``text`` (MinHash input)."""
    return frozenset(map(zlib.crc32, grams(normalise(text), k)))


def jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients of ``num_perm`` universal hash functions, derived from ``seed`` alone."""
    raw = hashlib.shake_256(f"comvint-minhash-{seed}".encode()).digest(8 * 2 * num_perm)
    values = np.frombuffer(raw, dtype="<u8").reshape(2, num_perm)
    # h(x) = (a*x + b) mod p with p = 2^31 - 1 and a, b, x < p: a*x + b < 2^62, exact in uint64.
    return values[0] % (_PRIME - 1) + 1, values[1] % _PRIME


class MinHasher:
    """MinHash signatures and LSH band keys with fixed, seed-derived permutations."""

    def __init__(self, num_perm: int = NUM_PERM, bands: int = BANDS, seed: int = 1) -> None:
        if num_perm % bands:
            raise ValueError("num_perm must be a multiple of bands")
        self.num_perm, self.bands, self.rows = num_perm, bands, num_perm // bands
        self._a, self._b = (v[:, None] for v in _permutations(num_perm, seed))

    def signature(self, shingle_set: Iterable[int]) -> np.ndarray:
        x = np.fromiter(shingle_set, dtype=np.uint64) % _PRIME
        return ((self._a * x[None, :] + self._b) % _PRIME).min(axis=1)

    def band_keys(self, signature: np.ndarray) -> list[int]:
        """One 64-bit key per band: a hash of the band's index and rows."""
        rows = signature.reshape(self.bands, self.rows)
        return [
            int.from_bytes(hashlib.blake2b(rows[i].tobytes(), digest_size=8, salt=i.to_bytes(2, "big")).digest(), "big")
            for i in range(self.bands)
        ]

    def sketch(self, member: Member) -> bytes:
        """A member with its band keys, packed as JSON bytes ``[[key per band], *member]`` (the signature is
        computed once; :func:`band_entries` cuts it per band)."""
        return orjson.dumps(
            [self.band_keys(self.signature(map(zlib.crc32, grams(member[4])))), *member]
        )  # text is normalised


def band_entries(sketch: bytes, bands: Iterable[int]) -> list[tuple[int, int, bytes]]:
    """``(band, shuffle key, entry)`` for each of ``bands`` of a :meth:`MinHasher.sketch`: the shuffle key is
    the band key's top :data:`SPREAD_BITS` bits, the entry the band key and the member packed as JSON bytes.

    A shuffle holds each value as one object: a packed entry costs less than
    half the memory of a tuple of five, and a few thousand shuffle keys per
    band cost less than one key per LSH bucket (most buckets hold one item).
    """
    keys, *member = orjson.loads(sketch)
    return [(band, keys[band] >> (64 - SPREAD_BITS), orjson.dumps([keys[band], *member])) for band in bands]


def band_waves(bands: int, waves: int) -> list[list[int]]:
    """The LSH bands split into ``waves`` groups run one after another (``waves`` clipped to 1..bands)."""
    waves = min(max(1, waves), bands)
    return [list(range(bands))[w::waves] for w in range(waves)]


def candidate_probability(similarity: float, bands: int = BANDS, rows: int = NUM_PERM // BANDS) -> float:
    """The chance two items of this Jaccard similarity share at least one band key."""
    return 1 - (1 - similarity**rows) ** bands


def canonical_image(ann: dict[str, Any]) -> str:
    """One key per physical image: a Visual Genome image with a ``flickr_id`` is that Flickr image."""
    if ann["source"] == VISUAL_GENOME and ann.get("flickr_id"):
        return image_key(FLICKR, ann["flickr_id"])
    return image_key(ann["source"], ann["image_id"])


def order_key(item: dict[str, Any]) -> OrderKey:
    return item["round"], _FORMAT_RANK.get(item["format"], 9), item["id"]


def lineage(item: dict[str, Any]) -> str:
    """Reformulations (Bool/MC) belong to their parent's lineage; others are their own."""
    return item["parent_id"] if item["format"] != "open_ended" and item.get("parent_id") else item["id"]


def related(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Parent and child, or two reformulations of one question: never duplicates of each other."""
    return lineage(a) == lineage(b) or a["id"] == b.get("parent_id") or b["id"] == a.get("parent_id")


def compact(item: dict[str, Any], unit: str) -> dict[str, Any]:
    """What dedup needs of an item (small, so grouping moves few bytes)."""
    return {
        "id": item["id"],
        "parent_id": item.get("parent_id"),
        "format": item["format"],
        "round": item["round"],
        "unit": unit,
        "text": normalise(item["instruction"]),
        "answer": normalise(str(item["answer"])),
    }


def duplicate_reason(item: dict[str, Any], survivor: dict[str, Any]) -> str:
    return EXACT if item["text"] == survivor["text"] else NEAR


def dedup_image(
    items: Iterable[dict[str, Any]], threshold: float = THRESHOLD
) -> list[tuple[dict[str, Any], str | None, str | None]]:
    """Items of one image -> ``(item, reason, duplicate_of)``; reason None keeps the item.

    Greedy in order: an item is dropped when an earlier kept item (not its parent,
    child or sibling reformulation) asks the same question, or nearly the same
    question with nearly the same answer. Near-identical questions with different
    answers ("is the cook larger than the child?" / "... the child larger than the
    cook?") are contrastive pairs, not duplicates.
    """
    kept: list[tuple[dict[str, Any], frozenset[bytes], frozenset[bytes]]] = []
    decisions = []
    for item in sorted(items, key=order_key):
        sh, ash = grams(item["text"]), grams(item["answer"])
        match = next(
            (
                k
                for k, ksh, kash in kept
                if not related(item, k)
                and (k["text"] == item["text"] or (jaccard(sh, ksh) >= threshold and jaccard(ash, kash) >= threshold))
            ),
            None,
        )
        if match is None:
            kept.append((item, sh, ash))
            decisions.append((item, None, None))
        else:
            decisions.append((item, duplicate_reason(item, match), match["id"]))
    return decisions


def member(item: dict[str, Any]) -> Member:
    """The compact tuple the corpus-wide steps move around: order key, image, and the text compared.

    Across images the text compared is the whole item, question then answer: one
    question asked of many pictures with different grounded answers ("What is the
    man wearing?" -> a wetsuit / an apron) teaches something each time; the same
    question with the same answer over and over does not.
    """
    return (*order_key(item), item["unit"], f"{item['text']} {item['answer']}".strip())


def exact_groups(members: Iterable[Member]) -> tuple[Member, list[OrderKey]]:
    """Items with one normalised text -> (the group's head, the order key of every member, best first).

    Only heads enter LSH: a question repeated over 100,000 images costs one
    sketch, not 100,000 pairwise checks.
    """
    ordered = sorted(members)
    return ordered[0], [m[:3] for m in ordered]


def bucket_pairs(
    members: Iterable[Member],
    threshold: float = THRESHOLD,
    max_compare: int = MAX_COMPARE,
    sets: dict[str, frozenset[bytes]] | None = None,
) -> list[tuple[str, str]]:
    """One LSH bucket -> verified near-duplicate pairs ``(id, id)`` of items of different images.

    Each member is checked (exact Jaccard) against up to ``max_compare`` earlier
    members, so a crowded bucket costs O(size x max_compare), not O(size^2).
    ``sets`` caches gram sets by text across the buckets of one shuffle group.
    """
    ordered = sorted(members)
    if len(ordered) < 2:
        return []
    sets = {} if sets is None else sets
    gram_sets = [sets[m[4]] if m[4] in sets else sets.setdefault(m[4], grams(m[4])) for m in ordered]
    pairs = []
    for j, (*_, mid, unit, _text) in enumerate(ordered):
        b = gram_sets[j]
        for i in range(max(0, j - max_compare), j):
            a = gram_sets[i]
            if ordered[i][3] == unit or min(len(a), len(b)) < threshold * max(len(a), len(b)):
                continue  # same image, or sizes too far apart for the threshold
            common = len(a & b)
            if common >= threshold * (len(a) + len(b) - common):
                pairs.append((ordered[i][2], mid))
    return pairs


def group_pairs(
    entries: Iterable[bytes], threshold: float = THRESHOLD, max_compare: int = MAX_COMPARE
) -> list[tuple[str, str]]:
    """The packed entries under one shuffle key -> verified pairs of each LSH bucket among them."""
    buckets: dict[int, list[Member]] = defaultdict(list)
    for entry in entries:
        key, *fields = orjson.loads(entry)
        buckets[key].append(tuple(fields))
    sets: dict[str, frozenset[bytes]] = {}
    return [
        pair
        for members in buckets.values()
        if len(members) > 1
        for pair in bucket_pairs(members, threshold, max_compare, sets)
    ]


def find(parent: dict[str, str], node: str) -> str:
    """The root of ``node``'s component in a union-find forest (with path compression)."""
    root = node
    while parent.get(root, root) != root:
        root = parent[root]
    while node != root:
        parent[node], node = root, parent[node]
    return root


def union(parent: dict[str, str], a: str, b: str) -> dict[str, str]:
    """Join the components of ``a`` and ``b``; the smaller id is always the root. Returns ``parent``."""
    ra, rb = find(parent, parent.setdefault(a, a)), find(parent, parent.setdefault(b, b))
    if ra != rb:
        parent[max(ra, rb)] = min(ra, rb)
    return parent


def merge_components(parent: dict[str, str], other: dict[str, str]) -> dict[str, str]:
    """Add every edge of another forest (node -> its root there) into ``parent``."""
    for node in list(other):
        union(parent, node, find(other, node))
    return parent


def component_roots(parent: dict[str, str]) -> dict[str, str]:
    """Every node -> the smallest id of its connected component."""
    return {node: find(parent, node) for node in list(parent)}


def cap_cluster(
    groups: Iterable[tuple[str, list[OrderKey]]],
    keep: int,
    threshold: float = THRESHOLD,
    max_leaders: int = MAX_LEADERS,
) -> list[tuple[str, str | None, str]]:
    """The exact groups ``(text, order keys)`` of one component -> ``(id, reason, leader id)`` of every item.

    Groups are taken best first; a group joins the most recent of the last ``max_leaders`` leaders
    whose text it is a near duplicate of (exact Jaccard >= ``threshold``), or leads a cluster
    itself. Of each leader's cluster the first ``keep`` items (by order) stay (reason None); the
    rest are ``template_repeat`` of the leader, the first item kept.
    """
    leaders: list[tuple[frozenset[bytes], list[OrderKey]]] = []
    for text, keys in sorted(groups, key=lambda g: min(g[1])):
        sh = grams(text)
        home = next(
            (members for lsh, members in reversed(leaders[-max_leaders:]) if jaccard(sh, lsh) >= threshold), None
        )
        if home is None:
            leaders.append((sh, list(keys)))
        else:
            home.extend(keys)
    decisions = []
    for _, members in leaders:
        ordered = sorted(members)
        first = ordered[0][2]
        decisions += [(key[2], None if rank < keep else TEMPLATE, first) for rank, key in enumerate(ordered)]
    return decisions
