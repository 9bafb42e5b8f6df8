"""Reduce a (B, T) per-token loss to the scalar that is back-propagated.

Modes (n_i = response tokens of sequence i, L_it = per-token loss, S = sequences with n_i > 0):

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
micro-batch's own count; only ``max_len`` is mode-specific. Under data parallelism use the counts over all
ranks, and multiply the loss by the world size if the wrapper averages gradients across ranks (DDP does).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import Tensor

from sapo_vl.algos.types import as_bool_mask, reject_unknown

AGGREGATION_MODES: tuple[str, ...] = (
    "token-mean",
    "seq-mean-token-mean",
    "seq-mean-token-sum",
    "seq-mean-token-sum-norm",
)

# The full-batch counts describe the batch, not the mode, so every mode accepts (and validates) both and uses
# the one it needs: a training loop can pass ``global_normalizers(full_mask)`` whatever the mode.
# ``max_len`` is a Dr.GRPO parameter and is an error anywhere else.
_GLOBAL = ("global_num_tokens", "global_num_seqs")
_ALLOWED_KWARGS: dict[str, tuple[str, ...]] = {
    "token-mean": _GLOBAL,
    "seq-mean-token-mean": _GLOBAL,
    "seq-mean-token-sum": _GLOBAL,
    "seq-mean-token-sum-norm": ("max_len", *_GLOBAL),
}
_REQUIRED_KWARGS: dict[str, tuple[str, ...]] = {"seq-mean-token-sum-norm": ("max_len",)}


def _check_mode(mode: str) -> None:
    if mode not in _ALLOWED_KWARGS:
        raise ValueError(f"aggregate: unknown mode {mode!r}; valid modes are {list(AGGREGATION_MODES)}")


def _count(owner: str, name: str, value: Any, local: Tensor) -> Tensor | float:
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
    result or its gradient. Unknown modes and keyword arguments raise ValueError listing the valid ones.
    """
    _check_mode(mode)
    owner = f"aggregate(mode={mode!r})"
    reject_unknown(owner, {k: v for k, v in kwargs.items() if k not in _ALLOWED_KWARGS[mode]}, _ALLOWED_KWARGS[mode])
    missing = [k for k in _REQUIRED_KWARGS.get(mode, ()) if kwargs.get(k) is None]
    if missing:
        raise ValueError(
            f"{owner}: missing required argument(s) {missing} (the fixed Dr.GRPO normaliser, "
            f"e.g. the maximum number of generated tokens)"
        )
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

    if mode == "token-mean":
        return loss.sum() / g_tok

    seq_sum = loss.sum(-1)  # (B,)
    if mode == "seq-mean-token-mean":
        per_seq = seq_sum / n_tok.clamp(min=1)  # (B,)
    elif mode == "seq-mean-token-sum":
        per_seq = seq_sum  # (B,)
    else:
        max_len = kwargs["max_len"]
        if isinstance(max_len, bool) or not isinstance(max_len, numbers.Real) or not 0 < max_len < math.inf:
            raise ValueError(f"{owner}: max_len must be a positive finite number, got {max_len!r}")
        longest = int(n_tok.max()) if n_tok.numel() else 0
        if longest > max_len:
            row = int(n_tok.argmax())
            raise ValueError(f"{owner}: sequence {row} has {longest} response tokens > max_len={max_len}")
        per_seq = seq_sum / float(max_len)  # (B,)
    return per_seq.sum() / g_seq


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
