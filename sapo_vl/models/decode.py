"""One new token per sequence through a Qwen3-VL(-MoE) text decoder, with fewer operations than its ``forward``.

Decoding a token with transformers' text model rebuilds the attention mask and the rotary cos/sin at every step,
grows each layer's KV cache by ``torch.cat`` (copying the whole cache per layer per token) and runs some 30 small
tensor operations per layer for its RMSNorms alone: on a CPU, and on a GPU at small batch, a decoding step costs
its operation count, not its FLOPs. ``FusedDecoder`` computes the same layers from the same weights with:

- the prompt's KV cache copied once, already repeated to the n completions of each prompt, into buffers sized for
  the whole completion; each new token's keys and values written in place, attention reading a view;
- the additive padding mask and the rotary cos/sin of every step computed once per call;
- ``torch.nn.functional.rms_norm`` (one fused kernel) for each RMSNorm; the attention of one query as two matmuls
  on CPU (with grouped-query heads folded, no repeat), ``scaled_dot_product_attention`` elsewhere;
- each layer's MLP called as a module; an MoE block's router too (its hooks fire: recorded routing), and its
  experts, where transformers would run them with its ``grouped_mm`` kernel on CPU, through the same
  ``torch._grouped_mm`` calls with about half the surrounding operations (``moe_rows``); any other experts
  kernel (``eager``, ``batched_mm``, or a GPU's) as the module.

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


def moe_rows(block, x: torch.Tensor) -> torch.Tensor:
    """A Qwen3-VL-MoE sparse block on (R, H) rows, as transformers' ``grouped_mm`` experts compute it: each row's
    k (expert, weight) pairs from the router module (its hooks fire), the pairs sorted by expert, each expert's rows
    through its gate/up and down projections by ``torch._grouped_mm``, weighted, then summed per row in router order.
    The same kernels and per-row summation, equal to the module's result to float rounding, with ~10 operations
    fewer per call (no histc on floats, no inverse permutation by scatter, no dispatch through the experts
    interface): a decoding step pays per operation."""
    _, weights, index = block.gate(x)  # (R, k) each
    experts = block.experts
    rows, k = index.shape
    flat = index.reshape(-1)  # (R * k,)
    order = flat.argsort(stable=True)  # pairs grouped by expert
    ends = torch.bincount(flat, minlength=experts.num_experts).cumsum(0, dtype=torch.int32)  # (E,)
    gate, up = torch._grouped_mm(x.index_select(0, order // k), experts.gate_up_proj.transpose(1, 2),
                                 offs=ends).chunk(2, dim=-1)  # (R * k, I) each
    out = torch._grouped_mm(experts.act_fn(gate) * up, experts.down_proj.transpose(1, 2), offs=ends)  # (R * k, H)
    out = out * weights.reshape(-1, 1)[order]
    return torch.empty_like(out).index_copy_(0, order, out).view(rows, k, -1).sum(1).to(x.dtype)


def _by_moe_rows(block, device: torch.device) -> bool:
    """Whether ``moe_rows`` computes ``block``: a Qwen3-VL-MoE sparse block whose experts transformers runs with
    its ``grouped_mm`` kernel, on CPU (where it is measured and tested; a GPU keeps the module)."""
    experts = getattr(block, "experts", None)
    return (device.type == "cpu" and hasattr(block, "gate") and hasattr(torch, "_grouped_mm")
            and getattr(getattr(experts, "config", None), "_experts_implementation", None) == "grouped_mm"
            and getattr(experts, "has_gate", False) and not getattr(experts, "has_bias", True)
            and not getattr(experts, "is_transposed", True) and not getattr(experts, "_is_expert_parallel", True)
            and getattr(experts, "gate_up_proj", torch.empty(0)).dim() == 3)


class _Layer:
    """One text layer's modules and norm weights, looked up once per call, not per token."""

    def __init__(self, layer, moe_rows: bool):
        attn = layer.self_attn
        self.q, self.k, self.v, self.o, self.mlp = attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, layer.mlp
        self.by_moe_rows = moe_rows and _by_moe_rows(layer.mlp, attn.q_proj.weight.device)
        self.norm_in, self.norm_post = _norm(layer.input_layernorm), _norm(layer.post_attention_layernorm)
        self.q_norm, self.k_norm = _norm(attn.q_norm), _norm(attn.k_norm)


class FusedDecoder:
    """Decodes ``steps`` tokens after a prefill whose ``cache`` (a ``DynamicCache`` over B prompts) holds the prompt
    keys and values. ``mask``: (B, P) prompt attention mask; ``position``: (4, B, 1) position ids of each prompt's
    last token (text row, then the 3 M-RoPE rows). Each prompt continues as ``n`` rows (prompt 0 x n, prompt 1 x n,
    ...). ``decoder(tokens)`` feeds one token per row ((B * n,) ids) and returns the next logits (B * n, V), float32.
    """

    moe_rows = True  # an MoE block's experts by ``moe_rows`` where it applies; False: the module (benchmarks compare)

    def __init__(self, model, cache, mask: torch.Tensor, position: torch.Tensor, n: int, steps: int):
        self.text, self.head = model.model.language_model, model.lm_head
        self.layers = [_Layer(layer, self.moe_rows) for layer in self.text.layers]
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
        # one query per row: on CPU two small batched matmuls beat the flash kernel scaled_dot_product_attention picks
        self.batched_matmuls = device.type == "cpu"
        kv = self.keys[0].shape[1]  # and per key/value head for them: (B * n * kv_heads, groups, P + steps)
        self.bias_per_head = self.bias.expand(rows, kv, self.groups, -1).reshape(rows * kv, self.groups, -1)
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
            h = h + (moe_rows(layer.mlp, x) if layer.by_moe_rows else layer.mlp(x[:, None])[:, 0])
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
        if self.batched_matmuls:
            kv = keys.shape[1]  # the query heads of each key/value head attend together, no repeat
            scores = torch.baddbmm(self.bias_per_head[..., :L], q.reshape(R * kv, self.groups, D),
                                   keys.reshape(R * kv, L, D).transpose(1, 2), alpha=self.scale)
            probs = torch.softmax(scores, -1, dtype=torch.float32).to(q.dtype)  # (R * kv, groups, L)
            out = torch.bmm(probs, values.reshape(R * kv, L, D))
        else:
            q = q.view(R, keys.shape[1], self.groups, D)
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
