"""Padding-free packed micro-batches for training forwards.

A padded batch (n, T) of [left-padded prompt | completion] pays for every padding token, and with skewed completion
lengths (8 to 256 tokens) that is about 40 % of it. ``pack`` lays the real tokens of the n sequences end to end in one
row (1, K), K the number of real tokens, with

- 4-row position ids: text positions restarting at 0 for each sequence, then the model's own ``get_rope_index``
  M-RoPE positions (temporal, height, width) of each sequence, as in its padded forward;
- flash-attn's varlen keyword arguments (``cu_seq_lens_q`` / ``_k``, ``max_length_q`` / ``_k``, the transformers
  padding-free format), which reach every attention layer of the text decoder (images arrive already encoded, as
  ``mm_encoder_outputs``); and a 2-D attention mask of ones, which transformers turns into no mask at all (no
  (K, K) mask is ever built).

Attention stays within each sequence: flash_attention_2 runs varlen on those boundaries; for sdpa (CPU, or CUDA
without flash-attn) ``pack`` gives the text decoder ``sdpa_per_sequence``, transformers' own sdpa attention called
once per sequence of a packed row (causal within it) and unchanged for every other forward (generation, padded
batches). Any other attention (eager, flex) would attend across sequences, so packing refuses it.

``Packing`` maps per-token tensors between the layouts (``to_padded`` / ``to_packed``): log-probs, entropy, router
logits and the routers' expert ids come back in the padded layout, and the loss and the MoE statistics (which weight
real tokens only) are unchanged. Images keep their order (sequences keep theirs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

from sapo_vl.errors import UserError

PACKED_MODELS = ("qwen3_vl", "qwen3_vl_moe")  # Qwen3-VL(-MoE): 4-row position ids, get_rope_index
SDPA_PER_SEQUENCE = "sapo_vl_sdpa_per_sequence"  # registered with transformers' AttentionInterface on first use
PACKED_ATTENTION = ("sdpa", SDPA_PER_SEQUENCE, "flash_attention_2")


def packing_unsupported(model) -> str | None:
    """Why packed batches would not be exact for ``model`` (None: they are)."""
    model_type = getattr(model.config, "model_type", None)
    if model_type not in PACKED_MODELS:
        return f"model type {model_type!r} is not one of {', '.join(PACKED_MODELS)}"
    attn = model.config.text_config._attn_implementation
    if attn not in PACKED_ATTENTION:
        return f"attention {attn!r} would attend across sequences (packing needs sdpa or flash_attention_2)"
    return None


def position_ids(model, inputs: dict) -> torch.Tensor:
    """The 4-row position ids ``generate`` gives Qwen3-VL(-MoE) for left-padded ``inputs`` (``input_ids``,
    ``attention_mask``, ``mm_token_type_ids``, ``image_grid_thw``), (4, B, T): the text position (counting each
    sequence's real tokens from 0; 0 at padding), then the 3-D M-RoPE rows of the model's ``get_rope_index``."""
    mask = inputs["attention_mask"]
    text = (mask.long().cumsum(1) - 1).masked_fill(mask == 0, 0)  # (B, T)
    rope, _ = model.model.get_rope_index(inputs["input_ids"], inputs["mm_token_type_ids"],
                                         inputs.get("image_grid_thw"), attention_mask=mask)  # (3, B, T)
    return torch.cat([text[None], rope])


def use_packing(model, mode: str) -> bool:
    """``train.packing``: auto -> packed where exact for ``model``, padded otherwise; on -> packed or a clear
    error; off -> padded."""
    reason = packing_unsupported(model)
    if mode == "on" and reason:
        raise UserError(f"train.packing=on: packed sequences are not exact here ({reason}); use "
                        "train.packing=auto or off")
    return mode != "off" and reason is None


def sdpa_per_sequence(module, query, key, value, attention_mask, cu_seq_lens_q=None, **kwargs):
    """transformers' sdpa attention; given the sequence boundaries of a packed row (``cu_seq_lens_q``), one causal
    call per sequence: nothing attends across sequences, and no (K, K) mask. query / key / value: (1, heads, K, d)."""
    if cu_seq_lens_q is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    bounds = cu_seq_lens_q.tolist()
    outs = [sdpa_attention_forward(module, query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], None, **kwargs)[0]
            for s, e in zip(bounds, bounds[1:])]  # (1, length, heads, d) each
    return torch.cat(outs, dim=1), None


def _packed_attention(model) -> None:
    """Make ``model``'s text decoder keep packed sequences apart: sdpa becomes ``sdpa_per_sequence`` (the same
    attention for every other forward); flash_attention_2 does it itself."""
    reason = packing_unsupported(model)
    if reason:
        raise ValueError(f"cannot pack sequences for this model: {reason}")
    text_config = model.config.text_config
    if text_config._attn_implementation == "sdpa":
        AttentionInterface.register(SDPA_PER_SEQUENCE, sdpa_per_sequence)
        AttentionMaskInterface.register(SDPA_PER_SEQUENCE, sdpa_mask)
        text_config._attn_implementation = SDPA_PER_SEQUENCE


@dataclass
class Packing:
    """Where the real tokens of a padded batch (n, T) sit in the packed row: ``src[k]`` is the flat padded index
    (in n * T) of packed token k; sequences in order, each one's tokens in order."""

    mask: torch.Tensor  # (n, T) 1 at the real tokens of the padded layout
    src: torch.Tensor  # (K,)

    def to_padded(self, x: torch.Tensor) -> torch.Tensor:
        """(K, ...) -> (n * T, ...), zeros at padding; differentiable."""
        out = x.new_zeros((self.mask.numel(), *x.shape[1:]))
        return out.index_copy(0, self.src.to(x.device), x)

    def to_packed(self, x: torch.Tensor) -> torch.Tensor:
        """(n * T, ...) -> (K, ...)."""
        return x[self.src.to(x.device)]

    def completions(self, prompt_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The packed index of each real completion token and its flat index in the (n, C) completion layout
        (C = T - ``prompt_len``), two (M,) tensors. Token k is predicted at k - 1 (prompts are never empty)."""
        T = self.mask.shape[1]
        at = (self.src % T >= prompt_len).nonzero()[:, 0]  # (M,)
        src = self.src[at]
        return at, src // T * (T - prompt_len) + src % T - prompt_len


def pack(model, micro) -> tuple[dict, int, Packing]:
    """(packed model inputs, P, Packing) for the Rollout ``micro``: ``input_ids`` (1, K), ``position_ids``
    (4, 1, K), the varlen boundaries, and the images as they are."""
    _packed_attention(model)
    inputs, P = micro.model_inputs()
    ids, mask = inputs["input_ids"], inputs["attention_mask"].bool()  # (n, T)
    packing = Packing(mask.long(), mask.reshape(-1).nonzero()[:, 0])
    lengths = mask.sum(1)  # (n,)
    positions = position_ids(model, inputs).reshape(4, -1).t()  # (n * T, 4), restarting at 0 per sequence
    bounds = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)]).int()  # (n + 1,)
    K, longest = int(bounds[-1]), int(lengths.max())
    packed = {"input_ids": packing.to_packed(ids.reshape(-1))[None],  # (1, K)
              "attention_mask": torch.ones(1, K, dtype=torch.long),  # no padding: transformers builds no mask
              "position_ids": packing.to_packed(positions).t()[:, None],  # (4, 1, K)
              "cu_seq_lens_q": bounds, "cu_seq_lens_k": bounds, "max_length_q": longest, "max_length_k": longest}
    packed.update({k: inputs[k] for k in ("pixel_values", "image_grid_thw", "image_keys") if k in inputs})
    return packed, P, packing


#END
