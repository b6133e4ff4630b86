"""Instruction records in the formats training code and data lakes read.

* LLaVA: ``{"id", "image", "conversations": [{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", ...}]}``
* messages: ``{"messages": [{"role": "user", ...}, {"role": "assistant", ...}], "images": [path]}``
  (HF TRL / LLaMA-Factory's ``sharegpt``-style multimodal layout, ``<image>`` once in the first user turn)
* Avro and Parquet: the instruction record with a declared schema (:data:`AVRO_SCHEMA`, :func:`arrow_schema`).
"""

from __future__ import annotations

from typing import Any

IMAGE_TOKEN = "<image>"
LETTERS = "ABCD"
MC_HINT = "Answer with the option's letter from the given choices directly."
BOOL_HINT = "Answer yes or no."


def prompt_text(record: dict[str, Any]) -> str:
    """The human turn: the question, with lettered options for multiple choice."""
    if record["format"] == "multiple_choice":
        options = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(record["options"]))
        return f"{record['instruction']}\n{options}\n{MC_HINT}"
    if record["format"] == "bool":
        return f"{record['instruction']}\n{BOOL_HINT}"
    return record["instruction"]


def answer_text(record: dict[str, Any]) -> str:
    """The model turn: the option letter, Yes/No, or the open answer."""
    if record["format"] == "multiple_choice":
        return LETTERS[record["answer_index"]]
    if record["format"] == "bool":
        return record["answer"].capitalize()
    return record["answer"]


def to_llava(record: dict[str, Any]) -> dict[str, Any]:
    return {"id": record["id"], "image": record["image"], "conversations": [
        {"from": "human", "value": f"{IMAGE_TOKEN}\n{prompt_text(record)}"},
        {"from": "gpt", "value": answer_text(record)},
    ]}


def to_messages(record: dict[str, Any]) -> dict[str, Any]:
    return {"messages": [
        {"role": "user", "content": f"{IMAGE_TOKEN}{prompt_text(record)}"},
        {"role": "assistant", "content": answer_text(record)},
    ], "images": [record["image"]]}


def _nullable(kind: Any) -> list[Any]:
    return ["null", kind]


_STRINGS = {"type": "array", "items": "string"}
AVRO_SCHEMA: dict[str, Any] = {
    "type": "record", "name": "Instruction", "namespace": "comvint",
    "doc": "One ComVint instruction record (docs/contract.md).",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "image_id", "type": "string"},
        {"name": "source", "type": "string"},
        {"name": "image", "type": "string"},
        {"name": "family", "type": "string"},
        {"name": "format", "type": "string"},
        {"name": "instruction", "type": "string"},
        {"name": "answer", "type": "string"},
        {"name": "options", "type": _nullable(_STRINGS), "default": None},
        {"name": "answer_index", "type": _nullable("int"), "default": None},
        {"name": "round", "type": "int"},
        {"name": "parent_id", "type": _nullable("string"), "default": None},
        {"name": "knowledge_type", "type": _nullable("string"), "default": None},
        {"name": "knowledge_topic", "type": _nullable("string"), "default": None},
        {"name": "verification", "type": _nullable({"type": "record", "name": "Verification", "fields": [
            {"name": "passed", "type": "boolean"}, {"name": "evidence", "type": "string"}]}), "default": None},
        {"name": "llm", "type": {"type": "record", "name": "LLM", "fields": [
            {"name": "backend", "type": "string"}, {"name": "model", "type": "string"}, {"name": "prompt_version", "type": "string"}]}},
        {"name": "grounding", "type": _STRINGS, "default": []},
    ],
}
FIELDS = tuple(f["name"] for f in AVRO_SCHEMA["fields"])


def to_table_row(record: dict[str, Any]) -> dict[str, Any]:
    """The record restricted to the declared fields (missing optional ones as null)."""
    row = {name: record.get(name) for name in FIELDS}
    row["grounding"] = list(record.get("grounding") or [])
    return row


def arrow_schema():
    """The Parquet (Arrow) schema matching :data:`AVRO_SCHEMA`."""
    import pyarrow as pa

    strings = pa.list_(pa.string())
    return pa.schema([
        ("id", pa.string()), ("image_id", pa.string()), ("source", pa.string()), ("image", pa.string()),
        ("family", pa.string()), ("format", pa.string()), ("instruction", pa.string()), ("answer", pa.string()),
        ("options", strings), ("answer_index", pa.int32()), ("round", pa.int32()), ("parent_id", pa.string()),
        ("knowledge_type", pa.string()), ("knowledge_topic", pa.string()),
        ("verification", pa.struct([("passed", pa.bool_()), ("evidence", pa.string())])),
        ("llm", pa.struct([("backend", pa.string()), ("model", pa.string()), ("prompt_version", pa.string())])),
        ("grounding", strings),
    ])
