"""comvint.item: the item's declared type is the one schema; the exports' schemas and public() follow it."""

from __future__ import annotations

import typing

from comvint import exports
from comvint.item import PRIVATE_PREFIX, Instruction, Verification, public, with_unit


def declared(kind) -> list[str]:
    return list(typing.get_type_hints(kind))


def test_the_written_fields_are_the_declared_public_fields_in_the_exports_schemas():
    written = [name for name in declared(Instruction) if not name.startswith(PRIVATE_PREFIX)]
    assert [f["name"] for f in exports.AVRO_SCHEMA["fields"]] == written
    assert exports.arrow_schema().names == written
    verification = next(f for f in exports.AVRO_SCHEMA["fields"] if f["name"] == "verification")
    assert [f["name"] for f in verification["type"][1]["fields"]] == declared(Verification)


def test_public_drops_exactly_the_private_fields():
    private = [name for name in declared(Instruction) if name.startswith(PRIVATE_PREFIX)]
    assert private == ["_unit", "_parent_instruction", "_parent_answer"]
    item = {"id": "i", "answer": "a", "_unit": "u", "_parent_instruction": "q", "_parent_answer": "a0"}
    assert public(item) == {"id": "i", "answer": "a"} and with_unit(item) == {"id": "i", "answer": "a", "_unit": "u"}
