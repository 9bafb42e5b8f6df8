"""Batch types shared by collation, generation and training.

Images live once per batch: ``image_grid_thw`` has one row per image of every sequence, ``images_per_sample`` says
which images belong to which sequence, and ``image_keys`` name each image (copies made by ``repeat`` share a key).
``pixel_values`` holds the patch rows of each DISTINCT image once, in order of the key's first appearance, so the G
copies of a prompt's image cost one copy of its pixels: ``select`` and ``repeat`` gather no pixel rows for repeats,
and the step's ``VisionCache`` (``sapo_vl.models.vision``) encodes each image once. ``full_pixel_values`` gives the
row-per-image layout a bare Hugging Face forward or ``generate`` expects.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch

from sapo_vl.models.vision import full_pixel_values, image_inputs, image_keys, image_rows


def _select_images(obj, indices: list[int]) -> dict:
    """The image fields of the sequences ``indices``: each distinct image's pixel rows once, grids, images per
    sample and image keys (one per image)."""
    if obj.image_grid_thw is None:
        return {"pixel_values": None, "image_grid_thw": None, "image_keys": [],
                "images_per_sample": [obj.images_per_sample[i] for i in indices]}
    first = [0]
    for n in obj.images_per_sample:
        first.append(first[-1] + n)
    image_idx = [im for i in indices for im in range(first[i], first[i + 1])]
    keys = image_keys(obj)
    rows = image_rows(obj.image_grid_thw, keys)
    chosen = list(dict.fromkeys(keys[i] for i in image_idx))  # distinct, in first-appearance order
    if chosen == list(rows)[:len(chosen)]:  # a prefix of the stored rows: a view, no copy
        pixels = obj.pixel_values[:sum(rows[k][1] for k in chosen)]
    else:
        pixels = torch.cat([obj.pixel_values[rows[k][0]:rows[k][0] + rows[k][1]] for k in chosen])
    some = bool(image_idx)
    return {"pixel_values": pixels if some else None,
            "image_grid_thw": obj.image_grid_thw[image_idx] if some else None,
            "images_per_sample": [obj.images_per_sample[i] for i in indices],
            "image_keys": [keys[i] for i in image_idx]}


def to_device(inputs: dict, device) -> dict:
    """Model inputs on ``device`` (tensors moved; image keys and other values as they are)."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


@dataclass
class PromptBatch:
    input_ids: torch.Tensor  # (B, P) left padded
    attention_mask: torch.Tensor  # (B, P)
    mm_token_type_ids: torch.Tensor  # (B, P) 0 text, 1 image, 2 video
    pixel_values: torch.Tensor | None  # (sum of patches, D)
    image_grid_thw: torch.Tensor | None  # (num images, 3)
    images_per_sample: list[int]
    records: list[dict]
    image_keys: list = field(default_factory=list)  # one per image; equal keys: the same image

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def model_inputs(self, keyed: bool = False) -> dict:
        """The Hugging Face inputs, ``generate``-ready (a pixel row block per image, repeats included); with
        ``keyed`` each distinct image's rows once and ``image_keys`` instead, for ``models.vision.encoder_inputs``."""
        inputs = {"input_ids": self.input_ids, "attention_mask": self.attention_mask,
                  "mm_token_type_ids": self.mm_token_type_ids, **image_inputs(self)}
        if not keyed and "image_keys" in inputs:
            inputs["pixel_values"] = full_pixel_values(inputs["pixel_values"], self.image_grid_thw,
                                                       inputs.pop("image_keys"))
        return inputs

    def select(self, indices: list[int]) -> PromptBatch:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return PromptBatch(self.input_ids[idx], self.attention_mask[idx], self.mm_token_type_ids[idx],
                           records=[self.records[i] for i in indices], **_select_images(self, indices))

    def repeat(self, n: int) -> PromptBatch:
        """Each prompt repeated n times consecutively (group layout: prompt 0 x n, prompt 1 x n, ...)."""
        return self.select([i for i in range(len(self)) for _ in range(n)])


@dataclass
class Rollout:
    """G completions per prompt, with everything the update needs. N = prompts x G sequences."""

    prompt_ids: torch.Tensor  # (N, P) left padded
    prompt_mask: torch.Tensor  # (N, P)
    prompt_mm_types: torch.Tensor  # (N, P)
    completion_ids: torch.Tensor  # (N, C) pad after EOS
    response_mask: torch.Tensor  # (N, C) 1 up to and including EOS
    truncated: torch.Tensor  # (N,) bool: no EOS within max_new_tokens
    group_ids: torch.Tensor  # (N,) index of the prompt within the step
    pixel_values: torch.Tensor | None
    image_grid_thw: torch.Tensor | None
    images_per_sample: list[int]
    records: list[dict]  # (N,) the record of each sequence's prompt
    completions: list[str]  # (N,) decoded completion text (special tokens removed)
    image_keys: list = field(default_factory=list)  # one per image; the G copies of a prompt's image share a key
    vision: object = None  # the step's VisionCache (shared by every select of this rollout)
    old_logprobs: torch.Tensor | None = None  # (N, C) from policy_forward, no grad
    sampler_logprobs: torch.Tensor | None = None  # (N, C) the sampler's own, kept for algo.rollout_correction
    routing: torch.Tensor | None = None  # (N, P + C, L, k) MoE expert ids of every token at rollout time
    ref_logprobs: torch.Tensor | None = None  # (N, C) reference policy (only when KL is on)
    rewards: torch.Tensor | None = None  # (N,)
    advantages: torch.Tensor | None = None  # (N,)

    def __len__(self) -> int:
        return self.prompt_ids.shape[0]

    @property
    def prompt_len(self) -> int:
        return self.prompt_ids.shape[1]

    def span(self) -> tuple[int, int]:
        """(p0, c1): the forward reads prompt columns p0: and completion columns :c1 (all-padding columns
        trimmed); in the full [prompt | completion] layout those are columns p0 .. P + c1."""
        keep_p = self.prompt_mask.any(0).nonzero()
        keep_c = self.response_mask.any(0).nonzero()
        return (int(keep_p[0]) if len(keep_p) else 0), (int(keep_c[-1]) + 1 if len(keep_c) else 1)

    def replay_routing(self) -> list[torch.Tensor] | None:
        """The recorded expert ids of the tokens ``model_inputs`` holds, one (n * T', k) tensor per MoE layer."""
        if self.routing is None:
            return None
        p0, c1 = self.span()
        ids = self.routing[:, p0:self.prompt_len + c1].long()  # (n, T', L, k)
        return [ids[:, :, layer].reshape(-1, ids.shape[-1]) for layer in range(ids.shape[2])]

    def model_inputs(self) -> tuple[dict, int]:
        """(inputs over [prompt | completion], P) for ``policy_forward``; trims all-padding columns first."""
        p0, c1 = self.span()
        prompt_ids, prompt_mask = self.prompt_ids[:, p0:], self.prompt_mask[:, p0:]
        comp, cmask = self.completion_ids[:, :c1], self.response_mask[:, :c1]
        inputs = {
            "input_ids": torch.cat([prompt_ids, comp], 1),  # (n, P' + C')
            "attention_mask": torch.cat([prompt_mask, cmask.to(prompt_mask.dtype)], 1),
            "mm_token_type_ids": torch.cat([self.prompt_mm_types[:, p0:], torch.zeros_like(comp)], 1),
        }
        inputs.update(image_inputs(self))
        return inputs, prompt_ids.shape[1]

    def select(self, indices: list[int]) -> Rollout:
        idx = torch.as_tensor(indices, dtype=torch.long)
        changes = {f.name: getattr(self, f.name)[idx] for f in fields(self)
                   if isinstance(getattr(self, f.name), torch.Tensor) and f.name not in ("pixel_values",
                                                                                          "image_grid_thw")}
        changes.update(_select_images(self, indices), records=[self.records[i] for i in indices],
                       completions=[self.completions[i] for i in indices])
        return replace(self, **changes)

    def to(self, device) -> Rollout:
        changes = {f.name: getattr(self, f.name).to(device) for f in fields(self)
                   if isinstance(getattr(self, f.name), torch.Tensor)}
        return replace(self, **changes)
