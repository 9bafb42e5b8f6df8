"""Reduce a (B, T) per-token loss to the scalar that is back-propagated.

Modes, in the registry ``AGGREGATION_MODES`` (where a plug-in adds its own); n_i = response tokens of sequence i,
L_it = per-token loss, S = sequences with n_i > 0:

* ``"token-mean"``:               sum_it L_it / sum_i n_i  (every token weighs the same; DAPO, CISPO)
* ``"seq-mean-token-mean"``:      (1/S) sum_i (sum_t L_it / n_i)  (GRPO/DeepSeekMath, GSPO, SAPO default)
* ``"seq-mean-token-sum"``:       (1/S) sum_i sum_t L_it
* ``"seq-mean-token-sum-norm"``:  (1/S) sum_i (sum_t L_it / max_len)  (Dr.GRPO, arXiv 2503.20783: a fixed
  normaliser instead of the response length removes the length bias; ``max_len`` is required, typically the
  generation budget, and no sequence may be longer).

Sequences with no response token (n_i = 0) contribute nothing and are excluded from S, so they never produce
NaN; a batch with no response token at all gives 0 (with a graph, so ``backward`` still works).

Micro-batching. The training loop splits a batch *along the sequence dimension* into micro-batches and
accumulates gradients. Pass the full batch's normaliser and the micro-batch results simply add up::

    kw = global_normalizers(full_response_mask)   # once per batch (+ max_len=... for Dr.GRPO)
    for micro in micro_batches:
        aggregate(micro.loss, micro.mask, mode, **kw).backward()   # == one full-batch backward

``global_num_tokens`` (used by token-mean) is sum_i n_i over the full batch; ``global_num_seqs`` (used by the
seq-mean modes) is S over the full batch. Every mode accepts both and checks each is at least the
micro-batch's own count; other arguments (``max_len``) are the mode's own. Under data parallelism use the counts
over all ranks, and multiply the loss by the world size if the wrapper averages gradients across ranks (DDP does).
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from typing import Any

import torch
from torch import Tensor

from sapo_vl.algos.types import as_bool_mask, reject_unknown
from sapo_vl.registry import Registry

Count = Tensor | float
AGGREGATION_MODES = Registry("aggregation mode")
"""``name -> fn(loss, n_tok, *, num_tokens, num_seqs, **params) -> 0-dim tensor``: ``loss`` (B, T) is 0 outside the
mask, ``n_tok`` (B,) the response tokens per sequence, ``num_tokens`` / ``num_seqs`` the full batch's counts (>= 1).
A mode's other keyword-only parameters (``max_len``) are its own; those without a default are required."""
_COUNTS = ("global_num_tokens", "global_num_seqs")  # every mode accepts (and validates) both


@AGGREGATION_MODES.register("token-mean")
def token_mean(loss: Tensor, n_tok: Tensor, *, num_tokens: Count, num_seqs: Count) -> Tensor:
    return loss.sum() / num_tokens


@AGGREGATION_MODES.register("seq-mean-token-mean")
def seq_mean_token_mean(loss: Tensor, n_tok: Tensor, *, num_tokens: Count, num_seqs: Count) -> Tensor:
    return (loss.sum(-1) / n_tok.clamp(min=1)).sum() / num_seqs  # (B,) per-sequence means


@AGGREGATION_MODES.register("seq-mean-token-sum")
def seq_mean_token_sum(loss: Tensor, n_tok: Tensor, *, num_tokens: Count, num_seqs: Count) -> Tensor:
    return loss.sum(-1).sum() / num_seqs


@AGGREGATION_MODES.register("seq-mean-token-sum-norm")
def seq_mean_token_sum_norm(loss: Tensor, n_tok: Tensor, *, num_tokens: Count, num_seqs: Count,
                            max_len: float) -> Tensor:
    owner = "aggregate(mode='seq-mean-token-sum-norm')"
    if isinstance(max_len, bool) or not isinstance(max_len, numbers.Real) or not 0 < max_len < math.inf:
        raise ValueError(f"{owner}: max_len must be a positive finite number, got {max_len!r}")
    longest = int(n_tok.max()) if n_tok.numel() else 0
    if longest > max_len:
        raise ValueError(f"{owner}: sequence {int(n_tok.argmax())} has {longest} response tokens > max_len={max_len}")
    return (loss.sum(-1) / float(max_len)).sum() / num_seqs  # (B,) sums over the fixed normaliser


@functools.lru_cache(maxsize=None)
def _params(fn) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A mode's own keyword-only parameters and the required ones among them."""
    own = [p for p in inspect.signature(fn).parameters.values()
           if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in ("num_tokens", "num_seqs")]
    return tuple(p.name for p in own), tuple(p.name for p in own if p.default is inspect.Parameter.empty)


def _count(owner: str, name: str, value: Any, local: Tensor) -> Count:
    """Validate a caller-given normaliser (>= the local count, >= 0) and return it, at least 1."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{owner}: {name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        v = float(value)
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        v = float(value)
    else:
        raise TypeError(f"{owner}: {name} must be a number or a scalar tensor, got {value!r}")
    if not v >= float(local):  # also rejects NaN
        raise ValueError(
            f"{owner}: {name}={v} is smaller than this micro-batch's own count {int(local)}; "
            f"it must be the count over the full batch"
        )
    if isinstance(value, Tensor):
        return value.reshape(()).clamp(min=1)
    return max(v, 1.0)


def aggregate(
    per_token_loss: Tensor, response_mask: Tensor, mode: str = "seq-mean-token-mean", **kwargs: Any
) -> Tensor:
    """Reduce ``per_token_loss`` (B, T) over ``response_mask`` (B, T) to a 0-dim tensor (see module doc).

    Positions outside the mask may hold NaN/inf; they are removed with ``torch.where`` and never reach the
    result or its gradient. An unknown mode raises the registry's error listing the registered ones; an unknown
    keyword argument raises ValueError listing the mode's valid ones.
    """
    fn = AGGREGATION_MODES[mode]
    owner = f"aggregate(mode={mode!r})"
    own, required = _params(fn)
    allowed = (*own, *_COUNTS)
    reject_unknown(owner, {k: v for k, v in kwargs.items() if k not in allowed}, allowed)
    missing = [k for k in required if kwargs.get(k) is None]
    if missing:
        raise ValueError(f"{owner}: missing required argument(s) {missing} (for Dr.GRPO's max_len: the maximum "
                         f"number of generated tokens)")
    if not isinstance(per_token_loss, Tensor) or per_token_loss.dim() != 2:
        raise ValueError(
            f"{owner}: per_token_loss must be a (B, T) tensor, got "
            f"{getattr(per_token_loss, 'shape', type(per_token_loss).__name__)}"
        )
    if tuple(response_mask.shape) != tuple(per_token_loss.shape):
        raise ValueError(
            f"{owner}: response_mask shape {tuple(response_mask.shape)} != per_token_loss shape "
            f"{tuple(per_token_loss.shape)}"
        )
    mask = as_bool_mask(owner, response_mask)  # (B, T)
    zero = torch.zeros((), dtype=per_token_loss.dtype, device=per_token_loss.device)
    loss = torch.where(mask, per_token_loss, zero)  # (B, T)
    n_tok = mask.sum(-1)  # (B,)
    num_tokens, num_seqs = n_tok.sum(), (n_tok > 0).sum()
    g_tok, g_seq = kwargs.get("global_num_tokens"), kwargs.get("global_num_seqs")
    g_tok = num_tokens.clamp(min=1) if g_tok is None else _count(owner, "global_num_tokens", g_tok, num_tokens)
    g_seq = num_seqs.clamp(min=1) if g_seq is None else _count(owner, "global_num_seqs", g_seq, num_seqs)
    return fn(loss, n_tok, num_tokens=g_tok, num_seqs=g_seq, **{k: kwargs[k] for k in own if k in kwargs})


def global_normalizers(response_mask: Tensor, *, max_len: float | None = None) -> dict[str, Any]:
    """The keyword arguments that make ``aggregate`` micro-batch invariant, from the FULL batch's mask.

    ``{"global_num_tokens": total response tokens, "global_num_seqs": non-empty sequences}``, plus ``max_len``
    when given (only valid with mode ``"seq-mean-token-sum-norm"``). Pass the result to every micro-batch's
    ``aggregate`` call.
    """
    mask = as_bool_mask("global_normalizers", response_mask)  # (B, T)
    out: dict[str, Any] = {"global_num_tokens": int(mask.sum()), "global_num_seqs": int(mask.any(-1).sum())}
    if max_len is not None:
        out["max_len"] = max_len
    return out
