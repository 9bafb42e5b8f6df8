"""A record's prompt as chat messages: the one rule the collator (what the model sees) and the reward call (what a
TRL reward function gets as ``prompts``) share.

A string prompt with images is a vision-language prompt, hence conversational: one user turn with an
``{"type": "image"}`` part per image at its ``<image>`` marker (the Geometry3K / EasyR1 convention), or all images
before the text when it has no marker. A message-list prompt is already conversational; a string prompt without
images stays a string (TRL's plain-text format).
"""

from __future__ import annotations

from sapo_vl.errors import DataError

IMAGE_MARKER = "<image>"


def as_messages(prompt: str, n_images: int, rid="?") -> list[dict]:
    """One user turn for a string prompt, image placeholders at its markers (else first)."""
    pieces = prompt.split(IMAGE_MARKER)
    if len(pieces) == 1:
        return [{"role": "user", "content": [{"type": "image"}] * n_images + [{"type": "text", "text": prompt}]}]
    if len(pieces) - 1 != n_images:
        raise DataError(f"record {rid!r}, field 'prompt': {len(pieces) - 1} {IMAGE_MARKER} markers but "
                        f"{n_images} images")
    content: list[dict] = []
    for i, text in enumerate(pieces):
        content += [{"type": "text", "text": text}] if text else []
        content += [{"type": "image"}] if i < n_images else []
    return [{"role": "user", "content": content}]


def reward_prompt(record: dict):
    """The prompt as TRL hands it to a reward function: messages if conversational (see above), else the string."""
    prompt, images = record.get("prompt"), record.get("images") or []
    return as_messages(prompt, len(images), record.get("id", "?")) if isinstance(prompt, str) and images else prompt


def reward_completions(completions: list[str], prompts: list) -> list:
    """Completions in their prompts' format, as TRL hands them to a reward: an assistant message for a chat prompt,
    the text for a plain one (``prompts`` as :func:`reward_prompt` gives them)."""
    return [[{"role": "assistant", "content": c}] if isinstance(p, list) else c for c, p in zip(completions, prompts)]
