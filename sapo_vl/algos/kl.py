"""Per-token KL estimators to a reference policy (Schulman, "Approximating KL Divergence", 2020).

Tokens are sampled from the current policy pi_theta, and we estimate KL(pi_theta || pi_ref) with
``log_r = ref_logprobs - logprobs`` (log of pi_ref / pi_theta), by the estimators in ``KL_ESTIMATORS`` (where a
plug-in registers its own):

* ``"k1"``: ``-log_r``                   unbiased, high variance, can be negative
* ``"k2"``: ``0.5 * log_r ** 2``         biased, low variance, >= 0
* ``"k3"``: ``exp(log_r) - log_r - 1``   unbiased, low variance, >= 0 (the GRPO paper's KL term)

Only ``k3`` exponentiates, so only ``k3`` clamps ``log_r`` to +-``log_ratio_clip`` (default 20) before
``exp``; its value and gradient are those of the clamped function (zero gradient beyond the clamp). k1 and k2
are exact. With ``response_mask``, positions outside it may hold NaN/inf: the inputs are replaced with
``torch.where`` before any arithmetic and the result is exactly 0 there, gradients included.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sapo_vl.algos.types import as_bool_mask, check_number, compute_dtype
from sapo_vl.registry import Registry

def _k3(log_r: Tensor, clip: float) -> Tensor:
    log_r = torch.clamp(log_r, -clip, clip)
    return torch.expm1(log_r) - log_r  # (B, T) == exp(log_r) - log_r - 1, accurate near 0


KL_ESTIMATORS = Registry("KL estimator", {
    "k1": lambda log_r, clip: -log_r,
    "k2": lambda log_r, clip: 0.5 * log_r.square(),
    "k3": _k3,
})
"""``name -> fn(log_r, clip) -> per-token KL``: ``log_r`` (B, T) is log(pi_ref / pi_theta), 0 outside the mask;
an estimator that exponentiates clamps it to +-``clip`` first."""


def kl_penalty(
    logprobs: Tensor,
    ref_logprobs: Tensor,
    kind: str = "k3",
    response_mask: Tensor | None = None,
    *,
    log_ratio_clip: float = 20.0,
) -> Tensor:
    """Per-token KL(pi_theta || pi_ref) estimate, shape of ``logprobs`` (B, T), float32 at least."""
    estimator = KL_ESTIMATORS[kind]
    clip = check_number("kl_penalty", "log_ratio_clip", log_ratio_clip, low=0.0, low_inclusive=False)
    if not isinstance(logprobs, Tensor) or not isinstance(ref_logprobs, Tensor):
        raise TypeError("kl_penalty: logprobs and ref_logprobs must be torch.Tensors")
    if logprobs.shape != ref_logprobs.shape:
        raise ValueError(
            f"kl_penalty: ref_logprobs shape {tuple(ref_logprobs.shape)} != logprobs shape {tuple(logprobs.shape)}"
        )
    dt = compute_dtype(logprobs, ref_logprobs)
    logp, ref = logprobs.to(dt), ref_logprobs.to(dt)
    mask = None
    if response_mask is not None:
        if response_mask.shape != logprobs.shape:
            raise ValueError(
                f"kl_penalty: response_mask shape {tuple(response_mask.shape)} != logprobs shape "
                f"{tuple(logprobs.shape)}"
            )
        mask = as_bool_mask("kl_penalty", response_mask)  # (B, T)
        zero = torch.zeros((), dtype=dt, device=logp.device)
        logp, ref = torch.where(mask, logp, zero), torch.where(mask, ref, zero)
    kl = estimator(ref - logp, clip)  # (B, T)
    if mask is not None:
        kl = torch.where(mask, kl, torch.zeros((), dtype=dt, device=kl.device))
    return kl
