"""Per-token log-probs and entropies of completion tokens, for batches with images, without a (B, T, V) float32.

The policy forward runs the decoder once (``model.model``) to get hidden states. Only the completion positions are
projected to the vocabulary, ``chunk_size`` tokens at a time, in float32, by a custom autograd function that
stores no logits: backward recomputes each chunk's logits and writes its gradient directly.
Peak memory for the head is then O(chunk_size * V) instead of O(B * T * V)
(tests/models/test_logprobs.py measures it at Qwen3-VL's vocabulary size).

The same function computes the rollout's old log-probs (no grad) and the training log-probs (grad), so both sides
of the importance ratio come from exactly the same computation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sapo_vl.models.load import is_moe
from sapo_vl.models.moe import load_balancing_loss
from sapo_vl.models.prefix import SharedPrefix, shared_forward
from sapo_vl.models.vision import encoder_inputs, every_rank_encodes


@dataclass
class PolicyForward:
    logprobs: torch.Tensor  # (B, C) log pi(completion token), float32
    entropy: torch.Tensor | None  # (B, C) detached, float32
    aux_loss: torch.Tensor | None  # scalar MoE load-balancing loss over attended tokens (None for dense models)
    router_logits: tuple[torch.Tensor, ...] | None  # per MoE layer, (B * T, E)


def scale_logits(logits: torch.Tensor, inv_temperature: float) -> torch.Tensor:
    """logits / temperature as the head computes them (times ``inv_temperature`` = 1 / temperature); at temperature
    1 the logits themselves (no pass over (n, V) to multiply by 1). The sampler tempers its log-probs with it too."""
    return logits if inv_temperature == 1.0 else logits * inv_temperature


class _ChunkedLogprob(torch.autograd.Function):
    """log softmax(h W^T + b)[target] * ... computed and differentiated chunk by chunk, logits never stored.

    Backward recomputes each chunk's logits: d logp / d logits = (onehot(target) - softmax) / temperature.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")  # backward then runs under the same (bf16) autocast state
    def forward(ctx, hidden, weight, bias, targets, inv_temperature, chunk_size, with_entropy):
        n = hidden.shape[0]
        logp = torch.empty(n, dtype=torch.float32, device=hidden.device)  # (N,)
        entropy = torch.empty(n if with_entropy else 0, dtype=torch.float32, device=hidden.device)  # (N,)
        for s in range(0, n, chunk_size):
            logits = scale_logits(F.linear(hidden[s:s + chunk_size], weight, bias).float(), inv_temperature)  # (n, V)
            logits = torch.log_softmax(logits, dim=-1)  # one kernel (logsumexp is several), the logits freed
            logp[s:s + chunk_size] = logits.gather(-1, targets[s:s + chunk_size, None])[:, 0]
            if with_entropy:  # -sum p log p
                entropy[s:s + chunk_size] = -logits.exp().mul_(logits).sum(-1)
        ctx.save_for_backward(hidden, weight, bias, targets)
        ctx.inv_temperature, ctx.chunk_size = inv_temperature, chunk_size
        ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad_logp, _grad_entropy):
        hidden, weight, bias, targets = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.zeros_like(hidden) if need_h else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
        grad_b = torch.zeros_like(bias, dtype=torch.float32) if need_b and bias is not None else None
        step = ctx.chunk_size
        logits_dtype = torch.promote_types(hidden.dtype, weight.dtype) if not torch.is_autocast_enabled("cuda") \
            else torch.get_autocast_dtype("cuda")
        for s in range(0, hidden.shape[0], step):
            h, g = hidden[s:s + step], grad_logp[s:s + step].float()  # (n, H), (n,)
            logits = scale_logits(F.linear(h, weight, bias).float(), ctx.inv_temperature)  # (n, V)
            dlogits = torch.softmax(logits, dim=-1).mul_(-g[:, None])  # (n, V)
            dlogits[torch.arange(h.shape[0], device=h.device), targets[s:s + step]] += g
            if ctx.inv_temperature != 1.0:
                dlogits.mul_(ctx.inv_temperature)
            if need_h:
                grad_h[s:s + step] = (dlogits.to(logits_dtype) @ weight.to(logits_dtype)).to(hidden.dtype)
            if need_w:
                grad_w.addmm_(dlogits.t(), h.float())
            if grad_b is not None:
                grad_b += dlogits.sum(0)
        grad_w = grad_w.to(weight.dtype) if grad_w is not None else None
        grad_b = grad_b.to(bias.dtype) if grad_b is not None else None
        return grad_h, grad_w, grad_b, None, None, None, None


def token_logprobs(hidden: torch.Tensor, lm_head: torch.nn.Module, targets: torch.Tensor, *,
                   temperature: float = 1.0, chunk_size: int = 1024, with_entropy: bool = False):
    """log softmax(lm_head(hidden) / temperature)[targets], computed chunk by chunk (forward and backward).

    Args:
        hidden: (N, H) hidden states (any dtype); targets: (N,) token ids.
    Returns:
        (logprobs (N,) float32 with grad, entropy (N,) float32 detached or None).
    """
    if hidden.shape[0] != targets.shape[0]:
        raise ValueError(f"hidden has {hidden.shape[0]} rows but targets has {targets.shape[0]}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    logp, entropy = _ChunkedLogprob.apply(hidden, lm_head.weight, getattr(lm_head, "bias", None), targets,
                                          1.0 / temperature, int(chunk_size), bool(with_entropy))
    return logp, (entropy if with_entropy else None)


def policy_forward(model, inputs: dict, prompt_len: int, *, temperature: float = 1.0, chunk_size: int = 1024,
                   with_entropy: bool = False, output_router_logits: bool | None = None,
                   vision=None, packing=None) -> PolicyForward:
    """Log-probs of the completion tokens of ``inputs``.

    Args:
        inputs: model inputs over the full sequence [left-padded prompt | completion]: ``input_ids`` (B, T),
            ``attention_mask`` (B, T), ``mm_token_type_ids`` (B, T) (zeros for completion tokens), and when the
            prompts have images ``pixel_values`` / ``image_grid_thw``. Or, with ``packing``, the packed inputs of
            ``sapo_vl.models.packing.pack``.
        prompt_len: P, the padded prompt width. Completion tokens are ``input_ids[:, P:]`` (C = T - P).
        output_router_logits: None -> True for MoE models.
        vision: a ``VisionCache`` whose features are valid for these weights (no-grad forwards, frozen vision
            tower); without one each distinct image (``inputs["image_keys"]``) is encoded once, with gradients.
        packing: the ``Packing`` of packed ``inputs``, or the ``SharedPrefix`` of padded ``inputs`` whose prompts
            repeat (``sapo_vl.models.prefix``); every output is then in the padded layout all the same.
    """
    B, T = inputs["input_ids"].shape if packing is None else packing.mask.shape
    if not 0 < prompt_len < T:
        raise ValueError(f"prompt_len must be in (0, {T}), got {prompt_len}")
    moe = is_moe(model)
    want_router = moe if output_router_logits is None else (output_router_logits and moe)
    kw = dict(temperature=temperature, chunk_size=chunk_size, with_entropy=with_entropy)
    if isinstance(packing, SharedPrefix):
        hidden, router_logits = shared_forward(model, inputs, prompt_len, packing, vision, want_router)
        logp, ent = token_logprobs(hidden.reshape(-1, hidden.shape[-1]), model.lm_head,
                                   inputs["input_ids"][:, prompt_len:].reshape(-1), **kw)
    else:
        extra = {"output_router_logits": True} if want_router else {}
        inputs = dict(inputs)
        extra.update(encoder_inputs(model, inputs, vision))
        out = model.model(**inputs, use_cache=False, **extra)
        logp, ent = _completion_logprobs(model, out.last_hidden_state, inputs["input_ids"], prompt_len, packing, **kw)
        router_logits = tuple(out.router_logits) if want_router and out.router_logits is not None else None
        if router_logits is not None and packing is not None:
            router_logits = tuple(packing.to_padded(g) for g in router_logits)  # (B * T, E) each
    mask = inputs.get("attention_mask") if packing is None else packing.mask
    aux = None
    if router_logits is not None:
        aux = load_balancing_loss(router_logits, mask, model.config.text_config.num_experts_per_tok)
    return PolicyForward(logprobs=logp.view(B, -1), entropy=None if ent is None else ent.view(B, -1),
                         aux_loss=aux, router_logits=router_logits)


def _completion_logprobs(model, hidden: torch.Tensor, input_ids: torch.Tensor, prompt_len: int, packing, **kw):
    """(B * C,) log-probs and entropies of the completion tokens, from the decoder's last hidden states; packed,
    only the real tokens go through the head (zeros at padding)."""
    if packing is None:
        B, T = input_ids.shape
        h = hidden[:, prompt_len - 1:T - 1]  # (B, C, H) predicts input_ids[:, P:]
        return token_logprobs(h.reshape(-1, h.shape[-1]), model.lm_head, input_ids[:, prompt_len:].reshape(-1), **kw)
    at, dest = (i.to(hidden.device) for i in packing.completions(prompt_len))  # (M,) each
    hidden = hidden.reshape(-1, hidden.shape[-1])  # (K, H)
    logp, ent = token_logprobs(hidden[at - 1], model.lm_head, input_ids.reshape(-1)[at], **kw)  # (M,)
    B, T = packing.mask.shape
    size = B * (T - prompt_len)
    logp = logp.new_zeros(size).index_copy(0, dest, logp)  # (B * C,)
    return logp, None if ent is None else ent.new_zeros(size).index_copy(0, dest, ent)


class PolicyModule(torch.nn.Module):
    """Wraps a HF policy so that the whole log-prob computation runs inside one module ``forward``.

    Distributed wrappers (DDP, FSDP2) hook a module's forward; routing ``policy_forward`` through this module's
    forward keeps their gradient synchronisation and parameter gathering intact. ``generate`` is the model's, and
    ``call(fn, ...)`` runs ``fn(model, ...)``; FSDP2 gathers for both once they are registered
    (``register_fsdp_forward_method``). The wrap units FSDP2 uses are the model's own ``_no_split_modules`` (decoder
    layers and vision blocks, dense or MoE alike).

    ``distributed`` (DDP or FSDP2): every forward runs the vision tower once on every rank, on a blank image where
    this rank has none to encode (``sapo_vl.models.vision.every_rank_encodes``), so that the ranks' collectives pair
    up: FSDP2 all-gathers each vision block's weights in the forward, and both reduce the tower's gradients in the
    backward (a DDP rank whose tower got no gradient leaves the others waiting on that bucket).
    """

    def __init__(self, model, distributed: bool = False):
        super().__init__()
        self.model, self.distributed = model, distributed

    @property
    def _no_split_modules(self) -> list[str]:
        return list(getattr(self.model, "_no_split_modules", None) or [])

    @property
    def generation_config(self):
        return self.model.generation_config

    def tie_weights(self) -> None:  # accelerate re-ties after moving a model to the meta device
        self.model.tie_weights()

    def forward(self, inputs: dict, prompt_len: int, temperature: float = 1.0, chunk_size: int = 1024,
                with_entropy: bool = False, vision=None, packing=None) -> PolicyForward:
        with every_rank_encodes(self.distributed) as zeros:
            out = policy_forward(self.model, inputs, prompt_len, temperature=temperature, chunk_size=chunk_size,
                                 with_entropy=with_entropy, vision=vision, packing=packing)
        if self.distributed:  # a blank image's zero joins the loss (its backward runs on every rank too); and a
            out.logprobs = out.logprobs + sum(zeros)  # new tensor, not a view: FSDP2 hooks a view's in-place ops badly
        return out

    def call(self, fn, *args):
        """``fn(model, *args)`` inside this module (under FSDP2, with the parameters gathered)."""
        return fn(self.model, *args)

    def generate(self, **kwargs) -> torch.Tensor:
        return self.model.generate(**kwargs)
