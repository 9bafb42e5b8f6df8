"""Each image through the vision tower once per step, where the maths allows.

A rollout repeats every prompt G times, and its images with it; mini-batches and epochs re-read them again. The
vision tower's output for an image depends on that image alone (its attention stays within the image), so:

- generation, the old-log-prob forward and every other no-grad forward of a step encode each distinct image once,
  and the step's ``VisionCache`` keeps the result (Qwen3-VL's merged embeddings and DeepStack features per image);
- a training forward with a frozen vision tower reads the same cache;
- a training forward through a trainable vision tower encodes each distinct image of its micro-batch once, with
  gradients; the copies share that graph, so their gradients sum exactly as if each copy had been encoded.

The outputs reach the model through its own ``mm_encoder_outputs`` argument (transformers >= 5), in place of
``pixel_values``.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

import torch

# In a multi-process run, the zeros of the blank images a forward encoded where it had none (``every_rank_encodes``)
_EVERY_RANK: ContextVar[list | None] = ContextVar("sapo_vl_every_rank_encodes", default=None)


def image_rows(image_grid_thw: torch.Tensor, keys: list, pixel_values: torch.Tensor | None = None) -> dict:
    """key -> (first row, rows) of each distinct image in ``pixel_values`` (first-appearance order of ``keys``);
    with ``pixel_values``, checks that it holds exactly those rows."""
    rows, start = {}, 0
    for key, size in zip(keys, image_grid_thw.prod(-1).tolist()):
        if key not in rows:
            rows[key] = (start, size)
            start += size
    if pixel_values is not None and pixel_values.shape[0] != start:
        raise ValueError(f"pixel_values has {pixel_values.shape[0]} patch rows, but the {len(rows)} distinct images "
                         f"of image_grid_thw need {start}")
    return rows


def full_pixel_values(pixel_values: torch.Tensor, image_grid_thw: torch.Tensor, keys: list) -> torch.Tensor:
    """The rows of every image in order, repeats included (what a Hugging Face forward expects); no copy when the
    keys are distinct."""
    rows = image_rows(image_grid_thw, keys, pixel_values)
    if len(rows) == len(keys):
        return pixel_values
    return torch.cat([pixel_values[rows[k][0]:rows[k][0] + rows[k][1]] for k in keys])


def image_keys(obj) -> list:
    """The batch's image keys (each image its own key when none were given)."""
    return obj.image_keys or list(range(0 if obj.image_grid_thw is None else len(obj.image_grid_thw)))


def image_inputs(obj) -> dict:
    """The image fields of a batch (``PromptBatch`` or ``Rollout``) as model inputs, keyed (none without images)."""
    return {} if obj.pixel_values is None else {"pixel_values": obj.pixel_values,
                                                "image_grid_thw": obj.image_grid_thw, "image_keys": image_keys(obj)}


class VisionCache:
    """image key -> (merged embeddings (tokens, H), [DeepStack feature (tokens, H) per layer]) of one model with
    one step's weights (``model``: the first model to fill it; any other model, e.g. a KL reference, bypasses it).
    ``output_type`` is the model's own output class (``mm_encoder_outputs`` values must be one).

    Deliberately not a dict: FSDP2 and DDP rebuild the dicts among a forward's arguments (moving their tensors),
    which would leave the features encoded inside the forward out of this step's cache."""

    def __init__(self):
        self.features: dict = {}
        self.output_type: type | None = None
        self.model: object = None

    def __len__(self) -> int:
        return len(self.features)

    def __reduce__(self):  # a checkpointed rollout keeps no features (nor the model): they are recomputed on use
        return VisionCache, ()


def _encode(model, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> tuple[type, list]:
    out = model.model.get_image_features(pixel_values, grid_thw, return_dict=True)
    layers = [list(layer) for layer in out.deepstack_features]
    return type(out), [(embeds, [layer[i] for layer in layers]) for i, embeds in enumerate(out.pooler_output)]


def image_outputs(model, pixel_values: torch.Tensor, grid_thw: torch.Tensor, keys: list,
                  cache: VisionCache | None = None):
    """The model's vision outputs for a batch's images (``keys``: one per image, equal keys for the same image;
    ``pixel_values``: each distinct image's rows once, as ``rollout.types`` keeps them), each distinct image not in
    ``cache`` encoded once (and stored there when ``cache`` is given)."""
    if cache is not None and cache.model not in (None, model):
        cache = None  # another model's features
    rows = image_rows(grid_thw, keys, pixel_values)  # key -> (first row, rows)
    first = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    known = cache.features if cache is not None else {}
    todo = [i for key, i in first.items() if key not in known]
    output_type = getattr(cache, "output_type", None)
    fresh = {}
    if not todo:
        no_image(model)
    else:
        pixels = torch.cat([pixel_values[rows[keys[i]][0]:sum(rows[keys[i]])] for i in todo])
        output_type, encoded = _encode(model, pixels, grid_thw[todo])
        fresh = {keys[i]: enc for i, enc in zip(todo, encoded)}
        if cache is not None:
            cache.features.update(fresh)
            cache.output_type, cache.model = output_type, model
    per_image = [fresh[k] if k in fresh else known[k] for k in keys]
    depth = len(per_image[0][1]) if per_image else 0
    return output_type(pooler_output=tuple(e for e, _ in per_image),
                       deepstack_features=[tuple(d[layer] for _, d in per_image) for layer in range(depth)])


def encoder_inputs(model, inputs: dict, cache: VisionCache | None = None) -> dict:
    """The model's ``mm_encoder_outputs`` argument for keyed ``inputs`` (``rollout.types``: ``image_keys`` and each
    distinct image's ``pixel_values`` rows once), popping those two from ``inputs``: each distinct image not in
    ``cache`` encoded once. {} when there is no image (inside ``every_rank_encodes``, a blank one is encoded), and
    for unkeyed pixels, which the model encodes itself."""
    keys = inputs.pop("image_keys", None)
    if keys is not None and inputs.get("pixel_values") is not None:
        return {"mm_encoder_outputs": {"image": image_outputs(model, inputs.pop("pixel_values"),
                                                              inputs["image_grid_thw"], keys, cache)}}
    if inputs.get("pixel_values") is None:
        no_image(model)
    return {}


@contextmanager
def every_rank_encodes(on: bool = True):
    """Inside, a forward (or generation prefill) that has no image to encode (text-only prompts, or every image
    already in the step's ``VisionCache``) runs the vision tower on a blank image instead, at the point where it
    would have encoded; yields the list of those blanks' zeros (add them to the loss: a backward then runs the
    tower's backward too). FSDP2 needs this: each vision block all-gathers its weights when it runs, so a rank that
    skipped the tower while another ran it would pair its next collectives with the wrong ones (gloo aborts, NCCL
    hangs); DDP too: a rank whose tower got no gradient never reduces that bucket while the others wait for it.
    ``on=False``: nothing changes."""
    token = _EVERY_RANK.set([] if on else None)
    try:
        yield _EVERY_RANK.get()
    finally:
        _EVERY_RANK.reset(token)


def no_image(model) -> None:
    """Where a forward of ``model`` encodes no image: inside ``every_rank_encodes``, encode a blank one."""
    zeros = _EVERY_RANK.get()
    if zeros is not None and getattr(getattr(model, "model", None), "visual", None) is not None:
        zeros.append(_blank_image(model))


def _blank_image(model) -> torch.Tensor:
    """0 times the outputs of the vision tower on one blank image of the smallest grid (one merged token)."""
    vc = model.config.vision_config
    merge = vc.spatial_merge_size
    param = next(model.model.visual.parameters())
    pixels = torch.zeros(merge * merge, vc.in_channels * vc.temporal_patch_size * vc.patch_size ** 2,
                         dtype=param.dtype, device=param.device)
    grid = torch.tensor([[1, merge, merge]], device=param.device)
    _, encoded = _encode(model, pixels, grid)
    embeds, deepstack = encoded[0]
    return 0.0 * (embeds.float().sum() + sum(d.float().sum() for d in deepstack))


def patch_embed_as_linear(model) -> bool:
    """Make the vision tower's patch embedding one matmul. Qwen3-VL's ``PatchEmbed`` is a ``Conv3d`` whose kernel
    equals its stride (no padding, dilation or groups): each output is one patch's pixels times the kernel, i.e. a
    linear map of the flattened patch. The convolution kernels ran it 2.9-4.7x slower than the matmul on our
    2-core CPU, forward and backward, at the tiny and at Qwen3-VL's vision widths (benchmarks/bench_patch_embed.py);
    cuDNN has been far slower still on some GPUs (transformers issue 45750). Only this module's ``forward`` changes: the
    weight stays the ``Conv3d``'s (viewed as (out, in*t*h*w)), so parameter names, checkpoints and gradients are as
    before. transformers' own ``fusion_config={"patch_embeddings": True}`` does the same, but replaces the class
    for every later load in the process and renames the weight. Returns whether it applied."""
    embed = getattr(getattr(getattr(model, "model", model), "visual", None), "patch_embed", None)
    proj = getattr(embed, "proj", None)
    if not (isinstance(proj, torch.nn.Conv3d) and proj.stride == proj.kernel_size and proj.groups == 1
            and all(p == 0 for p in proj.padding) and all(d == 1 for d in proj.dilation)):
        return False
    embed.forward = _linear_patch_embed.__get__(embed)
    return True


def _linear_patch_embed(self, pixels: torch.Tensor) -> torch.Tensor:
    """``PatchEmbed.forward`` as a matmul: (patches, in * t * h * w) pixels -> (patches, embed_dim)."""
    weight = self.proj.weight  # (out, in, t, h, w)
    flat = weight.reshape(weight.shape[0], -1)
    return torch.nn.functional.linear(pixels.reshape(-1, flat.shape[1]).to(weight.dtype), flat, self.proj.bias)
