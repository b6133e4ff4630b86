"""Instruction records in the formats training code and data lakes read.

* LLaVA: ``{"id", "image", "conversations": [{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", ...}]}``
  (LLaVA's ``LazySupervisedDataset``: ``image`` is relative to its ``--image_folder``)
* messages: ``{"id", "messages": [{"role": "user", "content": "<image>..."}, {"role": "assistant", ...}], "images":
[path]}``
  (LLaMA-Factory's ``sharegpt`` layout: one ``<image>`` token per image, in the text)
* trl: ``{"id", "messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": ...}]}, ...],
"images": [path]}``
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


def question_text(record: dict[str, Any]) -> str:
    """The question with its lettered options (multiple choice)."""
    if record["format"] == "multiple_choice":
        options = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(record["options"]))
        return f"{record['instruction']}\n{options}"
    return record["instruction"]


def prompt_text(record: dict[str, Any]) -> str:
    """The question as a training prompt: lettered options for multiple choice, LLaVA-1.5's short-answer
    prompt for Bool (answered "Yes"/"No", as its VQAv2 and GQA items are)."""
    if record["format"] == "multiple_choice":
        return f"{question_text(record)}\n{MC_HINT}"
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
    return {
        "id": record["id"],
        "image": record["image"],
        "conversations": [
            {"from": "human", "value": f"{IMAGE_TOKEN}\n{prompt_text(record)}"},
            {"from": "gpt", "value": answer_text(record)},
        ],
    }


def to_messages(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": record["id"],
        "messages": [
            {"role": "user", "content": f"{IMAGE_TOKEN}{prompt_text(record)}"},
            {"role": "assistant", "content": answer_text(record)},
        ],
        "images": [record["image"]],
    }


def to_trl(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": record["id"],
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt_text(record)}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer_text(record)}]},
        ],
        "images": [record["image"]],
    }


def _nullable(kind: Any) -> list[Any]:
    return ["null", kind]


_STRINGS = {"type": "array", "items": "string"}
AVRO_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Instruction",
    "namespace": "comvint",
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
        {
            "name": "verification",
            "type": _nullable(
                {
                    "type": "record",
                    "name": "Verification",
                    "fields": [
                        {"name": "passed", "type": _nullable("boolean"), "default": None},
                        {"name": "evidence", "type": _nullable("string"), "default": None},
                        {"name": "inherited_from", "type": _nullable("string"), "default": None},
                    ],
                }
            ),
            "default": None,
        },
        {
            "name": "llm",
            "type": {
                "type": "record",
                "name": "LLM",
                "fields": [
                    {"name": "backend", "type": "string"},
                    {"name": "model", "type": "string"},
                    {"name": "prompt_version", "type": "string"},
                ],
            },
        },
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


REJECTED_FIELDS = ("reason", "stage", "evidence", "duplicate_of")


def to_rejected_row(record: dict[str, Any]) -> dict[str, Any]:
    """A rejected record restricted to the declared fields: an instruction's (null for an image-level
    rejection, which has no item) and why it was dropped."""
    row = to_table_row(record)
    return {
        **row,
        "grounding": row["grounding"] if "id" in record else None,
        **{k: record.get(k) for k in REJECTED_FIELDS},
    }


def rejected_arrow_schema():
    """The Parquet schema of ``rejected``: every instruction field optional, then the reason, stage and evidence."""
    import pyarrow as pa

    instruction = [f.with_nullable(True) for f in arrow_schema()]
    reasons = [
        pa.field("reason", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("evidence", pa.string()),
        pa.field("duplicate_of", pa.string()),
    ]
    return pa.schema([*instruction, *reasons])


def arrow_schema():
    """The Parquet (Arrow) schema matching :data:`AVRO_SCHEMA`: what Avro declares non-null is required here."""
    import pyarrow as pa

    def strings():
        return pa.list_(pa.field("element", pa.string(), nullable=False))  # the standard (compliant) list layout

    def required(name: str, kind) -> pa.Field:
        return pa.field(name, kind, nullable=False)

    return pa.schema(
        [
            *(
                required(n, pa.string())
                for n in ("id", "image_id", "source", "image", "family", "format", "instruction", "answer")
            ),
            ("options", strings()),
            ("answer_index", pa.int32()),
            required("round", pa.int32()),
            ("parent_id", pa.string()),
            ("knowledge_type", pa.string()),
            ("knowledge_topic", pa.string()),
            (
                "verification",
                pa.struct([("passed", pa.bool_()), ("evidence", pa.string()), ("inherited_from", pa.string())]),
            ),
            required("llm", pa.struct([required(n, pa.string()) for n in ("backend", "model", "prompt_version")])),
            required("grounding", strings()),
            ("image_stages", strings()),
        ]
    )


# -- Label Studio review: a sample of instructions for human spot checks ------------------------------

REVIEW_TASKS_FILE, REVIEW_CONFIG_FILE = "tasks.json", "labeling_config.xml"
REVIEW_VERDICTS = (
    "correct",
    "wrong answer",
    "not answerable from the image",
    "answerable without the image",
    "unclear or ungrammatical question",
)
REVIEW_CONFIG = """<View>
  <Header value="$family · $format · round $round"/>
  <Image name="image" value="$image" zoom="true"/>
  <Text name="question" value="$question"/>
  <Header value="Answer given"/>
  <Text name="answer" value="$answer"/>
  <Collapse>
    <Panel value="The generator's judge">
      <Text name="verdict" value="$verdict"/>
      <Text name="evidence" value="$evidence"/>
    </Panel>
  </Collapse>
  <Choices name="review" toName="question" choice="single" showInLine="false" required="true">
{choices}
  </Choices>
  <TextArea name="comment" toName="question" placeholder="What is wrong (optional)" maxSubmissions="1"/>
</View>
""".replace("{choices}", "\n".join(f'    <Choice value="{v}"/>' for v in REVIEW_VERDICTS))


def review_image_url(image_root: str | None, image: str) -> str:
    """Where Label Studio finds the picture: the object URL under a remote ``image_root`` (``gs://``, ``s3://``,
    ``http(s)://``; Label Studio presigns cloud storage), else its local-files URL (serve ``--image_root`` as
    ``LOCAL_FILES_DOCUMENT_ROOT``)."""
    if image_root and "://" in image_root:
        return f"{image_root.rstrip('/')}/{image}"
    return f"/data/local-files/?d={image}"


def to_review_task(record: dict[str, Any], image_root: str | None) -> dict[str, Any]:
    """One Label Studio task: the picture, the question as the model sees it, the answer, the judge's verdict and
    evidence, and the lineage ids (in ``meta``, which Label Studio keeps with the annotations it exports)."""
    verification = record.get("verification") or {}
    passed = verification.get("passed")
    return {
        "data": {
            "image": review_image_url(image_root, record["image"]),
            "question": question_text(record),
            "answer": answer_text(record)
            if record["format"] != "multiple_choice"
            else f"{answer_text(record)}. {record['options'][record['answer_index']]}",
            "options": record.get("options") or [],
            "family": record["family"],
            "format": record["format"],
            "round": record["round"],
            "verdict": {True: "passed", False: "failed"}.get(passed, "not judged"),
            "evidence": verification.get("evidence") or "",
            "id": record["id"],
        },
        "meta": {
            "id": record["id"],
            "parent_id": record.get("parent_id"),
            "image_id": record["image_id"],
            "source": record["source"],
            "inherited_from": verification.get("inherited_from"),
        },
    }
