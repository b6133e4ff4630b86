"""The picture in the loop: an image file made into the part a chat request carries, and what it costs.

A worker reads each image once (its caller caches :func:`picture` per path), downsizes it to fit the
detail setting (OpenAI's own scaling: ``low`` looks at 512 x 512; ``high`` fits 2048 x 2048, then a
shortest side of 768), re-encodes it as JPEG and sends it as a ``data:`` URL. A request's cache key
names the picture by the original file's SHA-256 and the settings, not by the re-encoded bytes.

Image tokens, as the providers document them (prompt tokens are billed for them):

* tiles (gpt-4o, gpt-4.1, gpt-4.5, o1, o3): ``low`` = base; else base + per-tile x the 512-px tiles of
  the high-detail scaling. gpt-4o / 4.1 / 4.5 / o1 / o3: 85 + 170; gpt-4o-mini: 2833 + 5667.
* patches (gpt-4.1-mini, gpt-4.1-nano, o4-mini): 32-px patches of the image scaled to at most 1536
  patches, times the model's multiplier (1.62, 2.46, 1.72).

A priced model with no known formula needs ``--llm_image_tokens`` (tokens per picture) rather than a guess.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import math
import re
from typing import Any

from PIL import Image, UnidentifiedImageError

DETAILS = ("low", "high", "auto")
LOW_PX = 512
JPEG_QUALITY = 85
TILE_MODELS = (
    ("gpt-4o-mini", 2833, 5667),
    ("gpt-4o", 85, 170),
    ("gpt-4.1-mini", None, None),
    ("gpt-4.1-nano", None, None),
    ("gpt-4.1", 85, 170),
    ("gpt-4.5", 85, 170),
    ("o1", 85, 170),
    ("o3", 85, 170),
)
PATCH_MULTIPLIER = {"gpt-4.1-mini": 1.62, "gpt-4.1-nano": 2.46, "o4-mini": 1.72}
MAX_PATCHES = 1536


class ImageError(Exception):
    """A picture that cannot be read or decoded."""


@dataclasses.dataclass(frozen=True)
class Picture:
    """One image, ready to send: its data URL, its sent size, and the original file's SHA-256."""

    data_url: str
    width: int
    height: int
    sha256: str


def fit(width: int, height: int, detail: str, max_px: int = 0) -> tuple[int, int]:
    """The size an image is sent at: ``low`` within 512 x 512; ``high``/``auto`` within 2048 x 2048 with a
    shortest side of at most 768; ``max_px`` (if set) caps the longest side further. Never enlarged."""
    if detail == "low":
        scale = min(1.0, LOW_PX / max(width, height))
    else:
        scale = min(1.0, 2048 / max(width, height))
        scale *= min(1.0, 768 / (min(width, height) * scale))
    if max_px:
        scale = min(scale, max_px / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def picture(data: bytes, detail: str = "low", max_px: int = 0) -> Picture:
    """Image file bytes -> a :class:`Picture` (RGB JPEG, downsized by :func:`fit`); :class:`ImageError` if
    unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            size = fit(image.width, image.height, detail, max_px)
            rgb = (
                image.convert("RGB").resize(size, Image.Resampling.LANCZOS)
                if size != image.size
                else image.convert("RGB")
            )
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise ImageError(f"{type(err).__name__}: {err}"[:300]) from None
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=JPEG_QUALITY)
    url = "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")
    return Picture(url, rgb.width, rgb.height, hashlib.sha256(data).hexdigest())


def image_part(pic: Picture, detail: str) -> dict:
    return {"type": "image_url", "image_url": {"url": pic.data_url, "detail": detail}}


def _family(model: str) -> str:
    return re.sub(r"^(?:openai/|azure/)", "", model.lower())


def known_formula(model: str) -> bool:
    name = _family(model)
    return any(name.startswith(m) for m in PATCH_MULTIPLIER) or any(name.startswith(m) for m, _, _ in TILE_MODELS)


def image_tokens(model: str, width: int, height: int, detail: str, flat: int = 0) -> int:
    """Prompt tokens one image of the sent size costs on ``model`` (``flat`` when set: a user's own figure); 0 for a
    model with no known formula (its cost is then unknown, and the configuration refuses to price it)."""
    if flat:
        return flat
    name = _family(model)
    patch = next((v for m, v in PATCH_MULTIPLIER.items() if name.startswith(m)), None)
    if patch is not None:
        patches = math.ceil(width / 32) * math.ceil(height / 32)
        if patches > MAX_PATCHES:  # scaled down to fit, then to a whole number of patches across
            w, h = (v * math.sqrt(MAX_PATCHES * 32 * 32 / (width * height)) / 32 for v in (width, height))
            fit_width = math.floor(w) / w
            patches = math.ceil(round(w * fit_width, 6)) * math.ceil(round(h * fit_width, 6))
        return math.ceil(min(patches, MAX_PATCHES) * patch)
    base, tile = next(((b, t) for m, b, t in TILE_MODELS if name.startswith(m) and b is not None), (None, None))
    if base is None:
        return 0
    if detail == "low":
        return base
    w, h = fit(width, height, "high")
    return base + tile * math.ceil(w / 512) * math.ceil(h / 512)


def with_picture(messages: list[dict[str, Any]], pic: Picture, detail: str) -> list[dict[str, Any]]:
    """The messages with the picture after the text of their last user turn."""
    *head, last = messages
    text = last["content"] if isinstance(last["content"], str) else last["content"][0]["text"]
    return [*head, {**last, "content": [{"type": "text", "text": text}, image_part(pic, detail)]}]


def picture_id(pic: Picture, detail: str) -> str:
    """How a cache key names a sent picture: the original file's SHA-256 and the settings it was sent with."""
    return f"{pic.sha256}|{detail}|{pic.width}x{pic.height}"
