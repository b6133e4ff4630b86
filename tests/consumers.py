"""What the tools our exports feed do with a row, re-implemented from their documented behaviour.

Each function raises AssertionError where the tool would reject the row, skip it
as broken, or train on something else than we meant; it returns what the tool
would train on.
"""

from __future__ import annotations

import posixpath
from typing import Any

IMAGE = "<image>"


def llava_sample(row: dict[str, Any], image_folder: str) -> dict[str, Any]:
    """LLaVA's LazySupervisedDataset + preprocess_multimodal: the image file and the conversation it trains on."""
    assert isinstance(row["id"], str) and isinstance(row["image"], str) and not posixpath.isabs(row["image"])
    turns = row["conversations"]
    assert len(turns) % 2 == 0 and [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
    moved = []
    for turn in turns:
        value = turn["value"]
        if IMAGE in value:  # LLaVA strips the token and puts it back at the start, followed by a newline
            value = IMAGE + "\n" + value.replace(IMAGE, "").strip()
        moved.append({"from": turn["from"], "value": value})
    assert sum(t["value"].count(IMAGE) for t in moved) == 1, "one image, one token"
    return {"image_file": posixpath.join(image_folder, row["image"]), "conversations": moved}


def llamafactory_sharegpt(row: dict[str, Any], media_dir: str) -> dict[str, Any]:
    """LLaMA-Factory's sharegpt converter (tags role/content/user/assistant) and its image-token check."""
    messages = row["messages"]
    for k, message in enumerate(messages):
        assert message["role"] == ("user" if k % 2 == 0 else "assistant"), "Invalid role tag: the row is skipped"
        assert isinstance(message["content"], str)
    assert len(messages) % 2 == 0, "Invalid message count: the row is skipped"
    tokens = sum(m["content"].count(IMAGE) for m in messages)
    assert tokens == len(row["images"]), "The number of images does not match the number of <image> tokens"
    return {
        "prompt": messages[:-1],
        "response": messages[-1:],
        "images": [posixpath.join(media_dir, i) for i in row["images"]],
    }


def trl_vision(row: dict[str, Any]) -> list[str]:
    """TRL's vision format: content parts; each {"type": "image"} part takes the next image. Returns the rendered
    turns."""
    images, rendered = list(row["images"]), []
    for k, message in enumerate(row["messages"]):
        assert message["role"] == ("user" if k % 2 == 0 else "assistant") and isinstance(message["content"], list)
        text = ""
        for part in message["content"]:
            if part["type"] == "image":
                assert images, "more image parts than images"
                images.pop(0)
                text += "<|image|>"
            else:
                assert part["type"] == "text" and IMAGE not in part["text"], (
                    "an <image> token in text is a second image"
                )
                text += part["text"]
        rendered.append(text)
    assert not images, "images without an image part"
    return rendered
