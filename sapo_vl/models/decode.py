"""One new token per sequence through a Qwen3-VL(-MoE) text decoder, with fewer operations than its ``forward``.

Decoding a token with transformers' text model rebuilds the attention mask and the rotary cos/sin at every step,
grows each layer's KV cache by ``torch.cat`` (copying the whole cache per layer per token) and runs some 30 small
tensor operations per layer for its RMSNorms alone: on a CPU, and on a GPU at small batch, a decoding step costs
its operation count, not its FLOPs. ``FusedDecoder`` computes the same layers from the same weights with:

- the prompt's KV cache copied once, already repeated to the n completions of each prompt, into buffers sized for
  the whole completion; each new token's keys and values written in place, attention reading a view;
- the additive padding mask and the rotary cos/sin of every step computed once per call;
- ``torch.nn.functional.rms_norm`` (one fused kernel) for each RMSNorm, ``scaled_dot_product_attention`` for the
  attention of one query;
- each layer's MLP called as a module (an MoE block's router hooks fire: recorded routing).

The logits equal the text model's to float rounding (tested within 2e-5, MoE and dense, padded prompts). It reads the
layers' weights directly, so it needs them unsharded: under FSDP2 it runs when every text layer is kept gathered for
the generation call (``sapo_vl.parallel.kept_units``), and a model with a layer still sharded decodes through the
layer calls (``LayerDecoder``), whose hooks gather it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributed.tensor import DTensor

from sapo_vl.models.prefix import cache_kwarg

FUSED_MODELS = ("qwen3_vl", "qwen3_vl_moe")  # text layers: q/k/v/o projections, q/k RMSNorm, M-RoPE, (MoE) MLP


def fused_decoding_supported(model) -> bool:
    """Whether ``FusedDecoder`` can compute ``model``'s text decoder now: a Qwen3-VL(-MoE) with its modules in place
    and every text weight a plain tensor. Under FSDP2 that holds only while the layers are gathered and kept so
    (``sapo_vl.parallel.kept_units``, after the prefill has gathered them); a weight still sharded (a ``DTensor``)
    means the layer calls, whose hooks gather it."""
    if getattr(model.config, "model_type", None) not in FUSED_MODELS:
        return False
    text = model.model.language_model
    if not all(hasattr(layer.self_attn, "q_norm") and hasattr(layer, "mlp") for layer in text.layers):
        return False

    return not any(isinstance(p, DTensor) for p in (*text.parameters(), *model.lm_head.parameters()))


def _norm(module) -> tuple[torch.Tensor, float]:
    return module.weight.float(), module.variance_epsilon


def _rms(x: torch.Tensor, norm: tuple[torch.Tensor, float]) -> torch.Tensor:
    """transformers' RMSNorm (in float32, weight applied after) as one fused kernel; ``norm``: ``_norm(module)``."""
    return F.rms_norm(x.float(), (x.shape[-1],), *norm).to(x.dtype)


def _linear(x: torch.Tensor, module) -> torch.Tensor:
    return F.linear(x, module.weight, module.bias)


class _Layer:
    """One text layer's modules and norm weights, looked up once per call, not per token."""

    def __init__(self, layer):
        attn = layer.self_attn
        self.q, self.k, self.v, self.o, self.mlp = attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, layer.mlp
        self.norm_in, self.norm_post = _norm(layer.input_layernorm), _norm(layer.post_attention_layernorm)
        self.q_norm, self.k_norm = _norm(attn.q_norm), _norm(attn.k_norm)


class FusedDecoder:
    """Decodes ``steps`` tokens after a prefill whose ``cache`` (a ``DynamicCache`` over B prompts) holds the prompt
    keys and values. ``mask``: (B, P) prompt attention mask; ``position``: (4, B, 1) position ids of each prompt's
    last token (text row, then the 3 M-RoPE rows). Each prompt continues as ``n`` rows (prompt 0 x n, prompt 1 x n,
    ...). ``decoder(tokens)`` feeds one token per row ((B * n,) ids) and returns the next logits (B * n, V), float32.
    """

    def __init__(self, model, cache, mask: torch.Tensor, position: torch.Tensor, n: int, steps: int):
        self.text, self.head = model.model.language_model, model.lm_head
        self.layers = [_Layer(layer) for layer in self.text.layers]
        self.norm = _norm(self.text.norm)
        attn = self.text.layers[0].self_attn
        self.groups, self.head_dim, self.scale = attn.num_key_value_groups, attn.head_dim, attn.scaling
        self.length = mask.shape[1]  # tokens in the buffers so far
        rows = mask.shape[0] * n
        self.keys, self.values = [], []
        for layer in cache.layers:  # (B, kv_heads, P, D) -> (B * n, kv_heads, P + steps, D)
            for stored, buffers in ((layer.keys, self.keys), (layer.values, self.values)):
                buf = stored.new_empty(rows, stored.shape[1], self.length + steps, stored.shape[3])
                buf[:, :, :self.length] = stored.repeat_interleave(n, 0)
                buffers.append(buf)
        dtype, device = self.keys[0].dtype, mask.device
        seen = torch.cat([mask.repeat_interleave(n, 0).bool(), mask.new_ones(rows, steps, dtype=torch.bool)], 1)
        # additive, (B * n, 1, 1, P + steps): 0 where a key is attended, -inf at prompt padding
        self.bias = torch.zeros(seen.shape, dtype=dtype, device=device).masked_fill(~seen, float("-inf"))[:, None, None]
        ahead = position.repeat_interleave(n, 1) + torch.arange(1, steps + 1, device=device)  # (4, B * n, steps)
        cos, sin = self.text.rotary_emb(self.keys[0], ahead[1:])  # (B * n, steps, D), the text model's own
        half = cos.shape[-1] // 2
        # rotate_half(x) * sin == x.roll(half) * [-sin_1, sin_2]: the sign folded into sin once
        self.cos, self.sin = cos, torch.cat([-sin[..., :half], sin[..., half:]], -1)
        self.step = 0

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        t, L = self.step, self.length + 1
        cos, sin, bias = self.cos[:, t, None], self.sin[:, t, None], self.bias[..., :L]
        h = self.text.embed_tokens(tokens)  # (R, H)
        for i, layer in enumerate(self.layers):
            h = h + self._attention(layer, _rms(h, layer.norm_in), i, cos, sin, bias)
            x = _rms(h, layer.norm_post)
            h = h + layer.mlp(x[:, None])[:, 0]
        self.step, self.length = t + 1, L
        return _linear(_rms(h, self.norm), self.head).float()

    def _attention(self, layer: _Layer, x, i: int, cos, sin, bias) -> torch.Tensor:
        R, D, L = x.shape[0], self.head_dim, self.length + 1
        q = _rms(_linear(x, layer.q).view(R, -1, D), layer.q_norm)  # (R, heads, D)
        k = _rms(_linear(x, layer.k).view(R, -1, D), layer.k_norm)  # (R, kv_heads, D)
        v = _linear(x, layer.v).view(R, -1, D)
        q = q * cos + q.roll(D // 2, -1) * sin
        k = k * cos + k.roll(D // 2, -1) * sin
        self.keys[i][:, :, L - 1], self.values[i][:, :, L - 1] = k, v
        keys, values = self.keys[i][:, :, :L], self.values[i][:, :, :L]  # (R, kv_heads, L, D)
        q = q.view(R, keys.shape[1], self.groups, D)  # the query heads of each key/value head together, no repeat
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=bias, scale=self.scale)
        return _linear(out.reshape(R, -1), layer.o)


class LayerDecoder:
    """The same interface through the text model's own ``forward`` and a ``DynamicCache`` (any model whose layers
    ``FusedDecoder`` does not know, and FSDP2-sharded ones, whose layer calls gather the weights)."""

    def __init__(self, model, cache, mask: torch.Tensor, position: torch.Tensor, n: int, steps: int):
        self.text, self.head, self.cache = model.model.language_model, model.lm_head, cache
        self.cache_key = cache_kwarg(self.text)
        cache.batch_repeat_interleave(n)
        self.mask, self.position = mask.repeat_interleave(n, 0), position.repeat_interleave(n, 1)

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.mask), 1)], dim=1)
        self.position = self.position + 1
        out = self.text(input_ids=tokens[:, None], attention_mask=self.mask, position_ids=self.position,
                        use_cache=True, **{self.cache_key: self.cache})
        return self.head(out.last_hidden_state[:, -1]).float()
