"""Instruction records in the formats training code and data lakes read.

* LLaVA: ``{"id", "image", "conversations": [{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", ...}]}``
  (LLaVA's ``LazySupervisedDataset``: ``image`` is relative to its ``--image_folder``)
* messages: ``{"id", "messages": [{"role": "user", "content": "<image>..."}, {"role": "assistant", ...}], "images": [path]}``
  (LLaMA-Factory's ``sharegpt`` layout: one ``<image>`` token per image, in the text)
* trl: ``{"id", "messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": ...}]}, ...], "images": [path]}``
  (TRL's vision format: the image is a content part, never a token in the text)
* Avro and Parquet: the instruction record with a declared schema (:data:`AVRO_SCHEMA`, :func:`arrow_schema`).
"""

from __future__ import annotations

from typing import Any

IMAGE_TOKEN = "<image>"
LETTERS = "ABCD"
# LLaVA-1.5's own prompts (its mix665k data): multiple choice (A-OKVQA, ScienceQA) and short answers (VQAv2, GQA).
MC_HINT = "Answer with the option's letter from the given choices directly."
SHORT_ANSWER_HINT = "Answer the question using a single word or phrase."


def prompt_text(record: dict[str, Any]) -> str:
    """The question as a training prompt: lettered options for multiple choice, LLaVA-1.5's short-answer
    prompt for Bool (answered "Yes"/"No", as its VQAv2 and GQA items are)."""
    if record["format"] == "multiple_choice":
        options = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(record["options"]))
        return f"{record['instruction']}\n{options}\n{MC_HINT}"
    if record["format"] == "bool":
        return f"{record['instruction']}\n{SHORT_ANSWER_HINT}"
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
    return {"id": record["id"], "messages": [
        {"role": "user", "content": f"{IMAGE_TOKEN}{prompt_text(record)}"},
        {"role": "assistant", "content": answer_text(record)},
    ], "images": [record["image"]]}


def to_trl(record: dict[str, Any]) -> dict[str, Any]:
    return {"id": record["id"], "messages": [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt_text(record)}]},
        {"role": "assistant", "content": [{"type": "text", "text": answer_text(record)}]},
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
            {"name": "passed", "type": _nullable("boolean"), "default": None},
            {"name": "evidence", "type": _nullable("string"), "default": None},
            {"name": "inherited_from", "type": _nullable("string"), "default": None}]}), "default": None},
        {"name": "llm", "type": {"type": "record", "name": "LLM", "fields": [
            {"name": "backend", "type": "string"}, {"name": "model", "type": "string"}, {"name": "prompt_version", "type": "string"}]}},
        {"name": "grounding", "type": _STRINGS, "default": []},
        {"name": "image_stages", "type": _nullable(_STRINGS), "default": None},
    ],
}
FIELDS = tuple(f["name"] for f in AVRO_SCHEMA["fields"])


def to_table_row(record: dict[str, Any]) -> dict[str, Any]:
    """The record restricted to the declared fields (missing optional ones as null)."""
    row = {name: record.get(name) for name in FIELDS}
    row["grounding"] = list(record.get("grounding") or [])
    if row["verification"] is not None:
        row["verification"] = {k: row["verification"].get(k) for k in ("passed", "evidence", "inherited_from")}
    return row


def arrow_schema():
    """The Parquet (Arrow) schema matching :data:`AVRO_SCHEMA`: what Avro declares non-null is required here."""
    import pyarrow as pa

    def strings():
        return pa.list_(pa.field("element", pa.string(), nullable=False))  # the standard (compliant) list layout

    def required(name: str, kind) -> pa.Field:
        return pa.field(name, kind, nullable=False)

    return pa.schema([
        *(required(n, pa.string()) for n in ("id", "image_id", "source", "image", "family", "format", "instruction", "answer")),
        ("options", strings()), ("answer_index", pa.int32()), required("round", pa.int32()), ("parent_id", pa.string()),
        ("knowledge_type", pa.string()), ("knowledge_topic", pa.string()),
        ("verification", pa.struct([("passed", pa.bool_()), ("evidence", pa.string()), ("inherited_from", pa.string())])),
        required("llm", pa.struct([required(n, pa.string()) for n in ("backend", "model", "prompt_version")])),
        required("grounding", strings()),
        ("image_stages", strings()),
    ])
