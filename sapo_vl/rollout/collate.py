"""Image-text prompt collation: chat template + qwen-vl-utils + the model's processor, each image processed once.

A ``PromptFormat`` (the processor, an optional system prompt and the image pixel budget) is all the configuration
this needs. ``collate_prompts`` turns records (see ``sapo_vl.data``) into a left-padded ``PromptBatch``. Its pixel
tensors and grids are reused unchanged by generation and by every training forward of the rollout, so the number of
image placeholder tokens always matches the features (the mismatch that other toolkits' users fight): it is checked
here, per sample, once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from qwen_vl_utils import process_vision_info
from qwen_vl_utils.vision_process import IMAGE_MAX_TOKEN_NUM, IMAGE_MIN_TOKEN_NUM, MAX_RATIO

from sapo_vl.chat import as_messages
from sapo_vl.errors import DataError
from sapo_vl.rollout.types import PromptBatch

IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"


class CollateError(DataError):
    """A record could not be turned into model inputs; the message names the record and the field."""


@dataclass(frozen=True)
class PromptFormat:
    """How records become prompts: the model's processor, an optional system prompt (added when a prompt has
    none), and the pixel budget of each image (``None``: qwen-vl-utils' defaults)."""

    processor: Any
    system_prompt: str | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None


def _image_part(image, bounds: tuple[int, int]) -> dict:
    return {"type": "image", "image": image, "min_pixels": bounds[0], "max_pixels": bounds[1]}


def build_messages(record: dict, fmt: PromptFormat) -> list[dict]:
    """Chat messages for one record, with image parts carrying the PIL image and its pixel budget (qwen-vl-utils
    layout).

    A string prompt becomes one user turn (``sapo_vl.chat.as_messages``: images at its ``<image>`` markers, else
    first). The i-th ``{"type": "image"}`` part gets ``record["images"][i]``.
    """
    images = list(record.get("images") or [])
    prompt = record.get("prompt")
    rid = record.get("id", "?")
    bounds = pixel_bounds(fmt)
    if isinstance(prompt, str):
        try:
            prompt = as_messages(prompt, len(images), rid)
        except DataError as err:
            raise CollateError(str(err)) from None
    if not isinstance(prompt, list):
        raise CollateError(f"record {rid!r}, field 'prompt': expected a string or chat messages, "
                           f"got {type(prompt).__name__}")
    messages, used = [], 0
    for msg in prompt:
        content = msg.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                if part.get("type") == "image":
                    if used >= len(images):
                        raise CollateError(f"record {rid!r}, field 'prompt': more image parts than images "
                                           f"({len(images)})")
                    parts.append(_image_part(images[used], bounds))
                    used += 1
                else:
                    parts.append(part)
            content = parts
        messages.append({"role": msg["role"], "content": content})
    if used != len(images):
        raise CollateError(f"record {rid!r}, field 'images': {len(images)} images but {used} image parts")
    if fmt.system_prompt and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": fmt.system_prompt})
    return messages


def _patch_merge(processor) -> tuple[int, int]:
    """(patch size, merge size) of the processor's images; their product is the side of one merged token."""
    ip = processor.image_processor
    return int(getattr(ip, "patch_size", 16)), int(getattr(ip, "merge_size", 2))


def _factor(processor) -> int:
    return math.prod(_patch_merge(processor))


def pixel_bounds(fmt: PromptFormat) -> tuple[int, int]:
    """The explicit (min, max) pixel budget of an image: qwen-vl-utils' defaults (4 and 16384 merged tokens) where
    unset, with the default minimum lowered to a smaller given maximum (qwen-vl-utils asserts min <= max)."""
    factor = _factor(fmt.processor)
    hi = int(fmt.max_pixels) if fmt.max_pixels else IMAGE_MAX_TOKEN_NUM * factor ** 2
    lo = int(fmt.min_pixels) if fmt.min_pixels else min(IMAGE_MIN_TOKEN_NUM * factor ** 2, hi)
    if lo > hi:
        raise CollateError(f"min_pixels ({lo}) must not exceed max_pixels ({hi})")
    return lo, hi


def count_prompt_tokens(fmt: PromptFormat, record: dict) -> int:
    """Prompt length in tokens (image placeholders expanded) without processing pixels: for length filtering.
    Raises ``CollateError`` for a record that ``collate_prompts`` would reject (placeholders, image shape)."""
    processor = fmt.processor
    min_pixels, max_pixels = pixel_bounds(fmt)
    messages = build_messages(record, fmt)
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    _check_placeholders([text], [record])  # the record would fail collation: say so at load time
    n = len(processor.tokenizer(text, add_special_tokens=False)["input_ids"])
    factor = _factor(processor)
    for k, im in enumerate(record.get("images") or []):
        h, w = resized_image_size(im.height, im.width, factor, min_pixels, max_pixels, where=_where(record, k))
        n += (h // factor) * (w // factor) - 1  # the one <|image_pad|> in the text expands to this many
    return n


def _where(record: dict, k: int) -> str:
    return f"record {record.get('id', '?')!r}, field 'images[{k}]'"


def resized_image_size(height: int, width: int, factor: int, min_pixels: int, max_pixels: int, *,
                       where: str = "image") -> tuple[int, int]:
    """(height, width) that the model sees: both multiples of ``factor`` (patch x merge), the area within
    [min_pixels, max_pixels], the aspect ratio kept as well as possible (qwen-vl-utils' ``smart_resize`` rule).
    Each side is at least one ``factor``: under a small ``max_pixels`` a narrow image's short side would
    otherwise round down to zero (qwen-vl-utils 0.0.14 then fails inside PIL); its long side then gets what the
    budget leaves."""
    if min(height, width) < 1 or max(height, width) / min(height, width) > MAX_RATIO:
        raise CollateError(f"{where}: a {width}x{height} image; expected an aspect ratio of at most {MAX_RATIO}")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
        if min(h_bar, w_bar) < factor:  # one patch row (column); the long side within the rest of the budget
            rest = max(factor, min(max(h_bar, w_bar), max_pixels // factor // factor * factor))
            h_bar, w_bar = (factor, rest) if h_bar < w_bar else (rest, factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    if max(h_bar, w_bar) / min(h_bar, w_bar) > MAX_RATIO:  # rounding can push a ratio just below the limit over
        raise CollateError(f"{where}: a {width}x{height} image resizes to {w_bar}x{h_bar}; expected an aspect "
                           f"ratio of at most {MAX_RATIO}")
    return h_bar, w_bar


def _presize_images(conversation: list[dict], record: dict, factor: int) -> None:
    """Resize each image part to its final size here (``resized_image_size``) and pin its pixel budget to that
    area, so qwen-vl-utils keeps the size as is: one resize per image, the same sizes as ``count_prompt_tokens``."""
    k = 0
    for msg in conversation:
        for part in msg["content"] if isinstance(msg["content"], list) else []:
            if part.get("type") != "image":
                continue
            im = part["image"]
            h, w = resized_image_size(im.height, im.width, factor, part["min_pixels"], part["max_pixels"],
                                      where=_where(record, k))
            part.update(image=im if im.size == (w, h) else im.resize((w, h)), min_pixels=h * w, max_pixels=h * w)
            k += 1


def _check_placeholders(texts: list[str], records: list[dict]) -> None:
    """One image placeholder per image in each rendered prompt, before the processor expands them: a literal
    ``<|image_pad|>`` in a record's text would otherwise steal another sample's image features."""
    for i, (text, rec) in enumerate(zip(texts, records)):
        n_images = len(rec.get("images") or [])
        found, videos = text.count(IMAGE_PAD), text.count(VIDEO_PAD)
        if found != n_images or videos:
            raise CollateError(f"record {rec.get('id', i)!r} (batch index {i}), field 'prompt': the chat template "
                               f"rendered {found} {IMAGE_PAD} and {videos} {VIDEO_PAD} placeholders for "
                               f"{n_images} image(s); expected one {IMAGE_PAD} per image (does the prompt text "
                               f"contain a literal placeholder token?)")


def _check_image_tokens(batch: dict, records: list[dict], processor) -> list[int]:
    """Placeholder tokens per sample must equal the features its grids produce. Returns images per sample."""
    pad_id = processor.tokenizer.convert_tokens_to_ids(IMAGE_PAD)
    merge = _patch_merge(processor)[1] ** 2
    grid = batch.get("image_grid_thw")
    per_image = [] if grid is None else (grid.prod(-1) // merge).tolist()
    counts, start = [], 0
    for i, rec in enumerate(records):
        n_images = len(rec.get("images") or [])
        expected = sum(per_image[start:start + n_images])
        found = int((batch["input_ids"][i] == pad_id).sum())
        if found != expected:
            raise CollateError(f"record {rec.get('id', i)!r} (batch index {i}), field 'images': the prompt has "
                               f"{found} image placeholder tokens but its {n_images} image(s) give {expected} "
                               f"features (image_grid_thw {grid[start:start + n_images].tolist() if n_images else []})")
        counts.append(n_images)
        start += n_images
    if start != len(per_image):
        raise CollateError(f"the batch has {len(per_image)} image grids but its records hold {start} images")
    return counts


def collate_prompts(fmt: PromptFormat, records: list[dict]) -> PromptBatch:
    """Left-padded model inputs for a list of records. Images are resized (``resized_image_size`` within the
    format's pixel budget) and turned into patches exactly once."""
    if not records:
        raise CollateError("collate_prompts got no records")
    processor = fmt.processor
    conversations = [build_messages(r, fmt) for r in records]
    texts = [processor.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in conversations]
    _check_placeholders(texts, records)
    for conversation, record in zip(conversations, records):
        _presize_images(conversation, record, _factor(processor))
    images, _ = process_vision_info(conversations, image_patch_size=_patch_merge(processor)[0])
    processor.tokenizer.padding_side = "left"
    kwargs: dict[str, Any] = {"text": texts, "return_tensors": "pt", "padding": True}
    if images:
        kwargs.update(images=images, do_resize=False)
    batch = processor(**kwargs)
    images_per_sample = _check_image_tokens(batch, records, processor)
    mm = batch.get("mm_token_type_ids")
    if mm is None:
        mm = torch.zeros_like(batch["input_ids"])
    return PromptBatch(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], mm_token_type_ids=mm,
        pixel_values=batch.get("pixel_values"), image_grid_thw=batch.get("image_grid_thw"),
        images_per_sample=images_per_sample, records=list(records), image_keys=list(range(sum(images_per_sample))),
    )

