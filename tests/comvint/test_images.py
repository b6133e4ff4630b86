"""Pictures: the size they are sent at, their tokens by the documented formulas, the cache key naming them by
their file's hash, the fake endpoint's checks, and the configuration that refuses to guess a price."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from comvint import images
from comvint.llm.cache import cache_key
from comvint.llm.config import ConfigError, LLMConfig
from comvint.testing.fake_openai import pictures_of, prompt_tokens_of


def jpeg(width: int, height: int, colour=(200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, "JPEG")
    return out.getvalue()


@pytest.mark.parametrize(
    ("size", "detail", "sent"),
    [
        ((500, 333), "low", (500, 333)),
        ((1024, 768), "low", (512, 384)),
        ((4000, 3000), "high", (1024, 768)),
        ((1024, 1024), "high", (768, 768)),
        ((2048, 4096), "high", (768, 1536)),
        ((300, 200), "auto", (300, 200)),
    ],
)
def test_pictures_are_sent_at_the_details_own_fit(size, detail, sent):
    assert images.fit(*size, detail) == sent
    pic = images.picture(jpeg(*size), detail)
    assert (pic.width, pic.height) == sent and pic.data_url.startswith("data:image/jpeg;base64,")


def test_max_px_caps_the_longest_side():
    assert images.fit(1024, 768, "high", max_px=400) == (400, 300)


@pytest.mark.parametrize(
    ("model", "size", "detail", "tokens"),
    [
        ("gpt-4o", (1024, 1024), "high", 765),  # 4 tiles of 512 after scaling to 768 x 768 (OpenAI's worked example)
        ("gpt-4o-2024-08-06", (2048, 4096), "high", 1105),  # 6 tiles
        ("gpt-4o", (4000, 3000), "low", 85),
        ("gpt-4o-mini", (500, 333), "low", 2833),
        ("gpt-4.1-mini", (1024, 1024), "high", 1659),  # 1024 patches x 1.62
        (
            "gpt-4.1-nano",
            (1800, 2400),
            "high",
            3572,
        ),  # 1056 x 1408 after scaling: 33 x 44 = 1452 patches (OpenAI's example) x 2.46
        ("my-local-vlm", (500, 333), "low", 0),  # no formula: unknown, never guessed
    ],
)
def test_image_tokens_follow_the_documented_formulas(model, size, detail, tokens):
    assert images.image_tokens(model, *size, detail) == tokens
    assert images.image_tokens(model, *size, detail, flat=300) == 300


def test_an_unreadable_picture_is_an_image_error():
    with pytest.raises(images.ImageError):
        images.picture(b"not an image at all")
    with pytest.raises(images.ImageError):
        images.picture(jpeg(40, 30)[:100])  # truncated


def test_the_cache_key_names_a_picture_by_its_files_hash_and_settings():
    pic = images.picture(jpeg(64, 48))
    messages = [{"role": "user", "content": "What is red?"}]
    shown = images.with_picture(messages, pic, "low")
    assert shown[-1]["content"] == [{"type": "text", "text": "What is red?"}, images.image_part(pic, "low")]

    def key(msgs, ids):
        return cache_key(
            base_url=None,
            model="m",
            messages=msgs,
            params={},
            schema=None,
            response_format="json_schema",
            prompt_version="v",
            images=ids,
        )

    same_file = {**pic.__dict__, "data_url": "data:image/jpeg;base64,AAAA"}  # re-encoded differently (another Pillow)
    reencoded = images.with_picture(messages, images.Picture(**same_file), "low")
    assert key(shown, (images.picture_id(pic, "low"),)) == key(reencoded, (images.picture_id(pic, "low"),))
    other = images.picture(jpeg(64, 48, (10, 200, 10)))
    assert key(shown, (images.picture_id(pic, "low"),)) != key(shown, (images.picture_id(other, "low"),))
    assert key(shown, (images.picture_id(pic, "low"),)) != key(shown, (images.picture_id(pic, "high"),))
    assert key(shown, (images.picture_id(pic, "low"),)) != key(messages, ())


def test_the_fake_endpoint_decodes_pictures_checks_their_shape_and_bills_them():
    pic = images.picture(jpeg(500, 333), "low")
    body = {
        "messages": images.with_picture(
            [{"role": "user", "content": "Image size: 500 x 333 pixels\nA red thing."}], pic, "low"
        )
    }
    ((image, detail),) = pictures_of(body)
    assert image.size == (500, 333) and detail == "low" and prompt_tokens_of(body) == 11 + 85
    wrong = {"messages": images.with_picture([{"role": "user", "content": "Image size: 333 x 500 pixels"}], pic, "low")}
    with pytest.raises(ValueError, match="does not match"):
        pictures_of(wrong)
    broken = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "x"},
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}},
                ],
            }
        ]
    }
    with pytest.raises(ValueError, match="invalid image"):
        pictures_of(broken)


def test_a_priced_model_with_no_formula_needs_a_tokens_per_picture_flag():
    base = {"backend": "openai", "model": "my-local-vlm", "image_root": "/images", "image_stages": ("verify",)}
    LLMConfig(**base)  # unpriced: its cost is unknown anyway
    with pytest.raises(ConfigError, match="--llm_image_tokens"):
        LLMConfig(**base, prices=(("my-local-vlm", 1.0, 2.0),))
    LLMConfig(**base, prices=(("my-local-vlm", 1.0, 2.0),), image_tokens=700)
    with pytest.raises(ConfigError, match="needs --image_root"):
        LLMConfig(backend="openai", image_stages=("verify",))
    with pytest.raises(ConfigError, match="stages are"):
        LLMConfig(backend="openai", image_root="/images", image_stages=("judge",))
