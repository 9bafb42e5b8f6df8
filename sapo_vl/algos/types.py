"""Shared types, errors and input checks for ``sapo_vl.algos``.

Everything here is about the boundary: turning caller tensors into the clean, masked, upcast tensors the loss
formulas work on, and failing with a specific message (which loss, which field, what shape was expected) when
the input is wrong.

Masking rule used by every function in this package: positions outside ``response_mask`` may hold anything
(NaN, +-inf). Such positions are replaced by ``torch.where`` on the *inputs*, before any arithmetic, so that
neither the forward value nor any backward pass ever sees them (``0 * NaN = NaN`` would leak through a
``loss * mask`` product, and through the gradient of a masked branch).
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


class UnknownArgumentError(TypeError, ValueError):
    """An unknown hyperparameter / keyword argument. Both a TypeError and a ValueError, so callers may catch
    either (Python raises TypeError for unexpected keywords; config code usually expects ValueError)."""


@dataclass
class PolicyLossOutput:
    """What every policy loss returns.

    per_token_loss: (B, T), float32 (float64 when inputs are float64), exactly 0 outside ``response_mask``.
        Reduce it with :func:`sapo_vl.algos.aggregate`.
    metrics: python floats computed over the masked (response) tokens only. A metric whose population is
        empty (e.g. ``sapo/gate_mean_neg`` with no negative-advantage token) is omitted, never NaN.
    """

    per_token_loss: Tensor
    metrics: dict[str, float] = field(default_factory=dict)


def reject_unknown(owner: str, unknown: Mapping[str, Any], valid: list[str] | tuple[str, ...]) -> None:
    """Raise UnknownArgumentError naming ``owner`` and listing the valid names if ``unknown`` is not empty."""
    if unknown:
        raise UnknownArgumentError(f"{owner}: unknown argument(s) {sorted(unknown)}; valid ones are {sorted(valid)}")


@functools.lru_cache(maxsize=None)
def hparam_names(fn: Callable) -> tuple[str, ...]:
    """Keyword-only hyperparameters of a policy loss: every keyword-only parameter except the tensors."""
    tensors = {"logprobs", "old_logprobs", "advantages", "response_mask"}
    return tuple(
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in tensors
    )


def check_number(
    owner: str,
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
) -> float:
    """Return ``value`` as float after checking it is a real number (not bool) within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: hyperparameter {name} must be a real number, got {value!r}")
    v = float(value)
    if math.isnan(v):
        raise ValueError(f"{owner}: hyperparameter {name} is NaN")
    if low is not None and (v < low or (v == low and not low_inclusive)):
        bound = ">=" if low_inclusive else ">"
        raise ValueError(f"{owner}: hyperparameter {name} must be {bound} {low}, got {v}")
    if high is not None and v > high:
        raise ValueError(f"{owner}: hyperparameter {name} must be <= {high}, got {v}")
    return v


def as_bool_mask(owner: str, response_mask: Tensor) -> Tensor:
    """A bool (B, T) mask from a bool or numeric 0/1 mask; anything else is an error (no soft weights)."""
    if not isinstance(response_mask, Tensor):
        raise TypeError(f"{owner}: response_mask must be a torch.Tensor, got {type(response_mask).__name__}")
    if response_mask.dtype == torch.bool:
        return response_mask
    bad = (response_mask != 0) & (response_mask != 1)  # (B, T); NaN counts as bad
    if bool(bad.any()):
        idx = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"{owner}: response_mask must hold only 0/1 (or be bool); found {response_mask[idx].item()} "
            f"at position {idx}"
        )
    return response_mask != 0


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float32 at least: bf16/fp16 inputs are upcast, float64 stays float64."""
    dt = torch.float32
    for t in tensors:
        dt = torch.promote_types(dt, t.dtype)
    return dt


@dataclass
class LossInputs:
    """Clean inputs for a loss formula. All (B, T), in ``dtype``, finite-safe outside ``mask``.

    logprobs / old_logprobs / advantages are replaced by 0 outside the mask. ``log_ratio`` is
    ``clamp(logprobs - old_logprobs, -clip, clip)`` (0 outside the mask, so ratio = 1 there) and
    ``raw_log_ratio`` is the unclamped difference (GSPO averages it before clamping).
    """

    mask: Tensor
    logprobs: Tensor
    old_logprobs: Tensor
    advantages: Tensor
    raw_log_ratio: Tensor
    log_ratio: Tensor

    @property
    def ratio(self) -> Tensor:
        return torch.exp(self.log_ratio)  # (B, T)


def _check_tensor(owner: str, name: str, t: Any) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{owner}: {name} must be a torch.Tensor, got {type(t).__name__}")
    return t


def prepare_inputs(
    owner: str,
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    log_ratio_clip: float,
) -> LossInputs:
    """Validate shapes/dtypes, upcast to >= float32 and sanitise masked positions (see module docstring)."""
    for name, t in (("logprobs", logprobs), ("old_logprobs", old_logprobs), ("advantages", advantages)):
        _check_tensor(owner, name, t)
    if logprobs.dim() != 2:
        raise ValueError(f"{owner}: logprobs must have shape (B, T), got {tuple(logprobs.shape)}")
    shape = tuple(logprobs.shape)
    for name, t in (("old_logprobs", old_logprobs), ("response_mask", response_mask)):
        if tuple(_check_tensor(owner, name, t).shape) != shape:
            raise ValueError(f"{owner}: {name} must have the shape of logprobs {shape}, got {tuple(t.shape)}")
    if not (logprobs.is_floating_point() and old_logprobs.is_floating_point()):
        raise TypeError(
            f"{owner}: logprobs and old_logprobs must be floating point, got {logprobs.dtype} and {old_logprobs.dtype}"
        )
    if tuple(advantages.shape) not in (shape[:1], shape):
        raise ValueError(
            f"{owner}: advantages must have shape (B,)={shape[:1]} or (B, T)={shape}, got {tuple(advantages.shape)}"
        )
    mask = as_bool_mask(owner, response_mask)  # (B, T)
    dt = compute_dtype(logprobs, old_logprobs, advantages)
    adv = advantages.to(dt)
    if adv.dim() == 1:
        adv = adv.unsqueeze(-1).expand(shape)  # (B, T)
    zero = torch.zeros((), dtype=dt, device=logprobs.device)
    logp = torch.where(mask, logprobs.to(dt), zero)  # (B, T)
    old = torch.where(mask, old_logprobs.to(dt), zero)  # (B, T)
    adv = torch.where(mask, adv, zero)  # (B, T)
    raw = logp - old  # (B, T), 0 outside the mask
    return LossInputs(mask, logp, old, adv, raw, torch.clamp(raw, -log_ratio_clip, log_ratio_clip))


# ----------------------------------------------------------------------------------------------- metrics
def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of x over mask (caller guarantees mask.any())."""
    return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum() / mask.sum()


def masked_min(x: Tensor, mask: Tensor) -> Tensor:
    return torch.where(mask, x, torch.full((), float("inf"), dtype=x.dtype, device=x.device)).min()


def masked_max(x: Tensor, mask: Tensor) -> Tensor:
    return torch.where(mask, x, torch.full((), float("-inf"), dtype=x.dtype, device=x.device)).max()


def masked_frac(cond: Tensor, mask: Tensor) -> Tensor:
    return (cond & mask).sum().to(torch.float64) / mask.sum()


def common_metrics(inp: LossInputs) -> dict[str, Tensor]:
    """ratio/mean|max|min, its 5 / 50 / 95 % quantiles, ``ratio/outside_frac`` (tokens with r outside [0.8, 1.2])
    and approx_kl over response tokens (empty dict if there are none).

    approx_kl is Schulman's k3 estimate of KL(pi_old || pi_theta) from tokens sampled by pi_old:
    k3 = (r - 1) - log r with r = pi_theta / pi_old (unbiased, always >= 0), on the clamped log-ratio.
    """
    if not bool(inp.mask.any()):
        return {}
    logr = inp.log_ratio.detach()  # (B, T)
    r = torch.exp(logr)  # (B, T)
    q = torch.quantile(r[inp.mask].to(torch.float64), torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64,
                                                                   device=r.device))
    return {
        "ratio/q05": q[0], "ratio/q50": q[1], "ratio/q95": q[2],
        "ratio/outside_frac": masked_frac((r < 0.8) | (r > 1.2), inp.mask),
        "ratio/mean": masked_mean(r, inp.mask),
        "ratio/max": masked_max(r, inp.mask),
        "ratio/min": masked_min(r, inp.mask),
        "approx_kl": masked_mean(torch.expm1(logr) - logr, inp.mask),
    }


def to_floats(metrics: Mapping[str, Tensor | float]) -> dict[str, float]:
    """One device sync for all metrics: stack the 0-dim tensors and read them back together."""
    keys = [k for k, v in metrics.items() if isinstance(v, Tensor)]
    out = {k: float(v) for k, v in metrics.items() if not isinstance(v, Tensor)}
    if keys:
        values = torch.stack([metrics[k].detach().to(torch.float64) for k in keys]).tolist()
        out.update(zip(keys, values))
    return {k: out[k] for k in metrics}
