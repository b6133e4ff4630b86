"""What every stage sends a model: a fixed system prompt with the paper's conditions, one worked
demonstration (a user turn and the assistant's reply), then the real user turn.

The system prompt and the demonstration are the same for every call of a stage and family, so an
endpoint with prompt caching (OpenAI, vLLM's prefix cache) pays for them once; everything that
varies (the annotations, the item, the topic, the knowledge type) is in the last user turn.
Annotation text is data: it is fenced in ``<annotations>`` tags, the item in ``<item>`` tags, and
tag-like text inside either is neutralised, so a caption or a generated question cannot close the
fence and steer a stage. Versioned: a change of wording is a new ``PROMPT_VERSION`` (a new cache key).
"""

from __future__ import annotations

import json

from comvint.prompts.demonstrations import demonstration
from comvint.prompts.templates import (
    CROSS_MODAL,
    DATA_RULE,
    FAMILY_KNOWLEDGE_TYPES,
    KNOWLEDGE_TYPES,
    OKVQA_TOPICS,
    OUTSIDE_KNOWLEDGE,
    PROMPT_VERSION,
    fence,
    generate_input,
    item_input,
    system_prompt,
)

__all__ = [
    "CROSS_MODAL",
    "DATA_RULE",
    "FAMILY_KNOWLEDGE_TYPES",
    "KNOWLEDGE_TYPES",
    "OKVQA_TOPICS",
    "OUTSIDE_KNOWLEDGE",
    "PROMPT_VERSION",
    "conversation",
    "fence",
    "generate_input",
    "item_input",
    "system_prompt",
]


def conversation(stage: str, family: str, user: str, n: int = 3) -> list[dict[str, str]]:
    """System prompt, the stage's demonstration (a user turn and its reply), then the real user turn."""
    demo_user, demo_reply = demonstration(stage, family, n)
    return [
        {"role": "system", "content": system_prompt(stage, family, n)},
        {"role": "user", "content": demo_user},
        {"role": "assistant", "content": json.dumps(demo_reply, ensure_ascii=False)},
        {"role": "user", "content": user},
    ]
