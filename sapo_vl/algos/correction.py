"""Rollout correction: importance weights pi_old / pi_sampler for a pi_old taken from the trainer's own scoring
forward while the tokens were drawn by a sampler whose log-probs differ (a bf16 inference engine, other kernels).

The definitions of verl's rollout importance sampling and ms-swift's ``rollout_importance_sampling_mode``, upper
threshold only (ms-swift's): with d_t = log pi_old(y_t) - log pi_sampler(y_t) over the response tokens,

- ``token_*``: rho_t = exp(d_t), each token its own weight;
- ``sequence_*``: rho = exp(mean_t d_t), the geometric mean over the sequence (ms-swift's sequence level, verl's
  "geometric"; verl's "sequence" is the product), the weight of every token of the sequence;
- ``*_truncate`` (TIS): w = min(rho, threshold);
- ``*_mask`` (MIS): w = rho where rho <= threshold, else 0: the token, or the whole sequence, leaves the loss (it
  still counts in the aggregation's normaliser, as in ms-swift).

The weights multiply the per-token policy loss. They are constants (no gradient): pi_old and the sampler are fixed.
"""

from __future__ import annotations

from typing import get_args

import torch
from torch import Tensor

from sapo_vl.algos.types import as_bool_mask, compute_dtype, masked_mean, to_floats
from sapo_vl.sections import CorrectionMode

CORRECTION_MODES = get_args(CorrectionMode)  # the config's choices (algo.rollout_correction.mode)


def rollout_correction_weights(old_logprobs: Tensor, sampler_logprobs: Tensor, response_mask: Tensor,
                               mode: str, threshold: float = 2.0) -> tuple[Tensor, dict[str, float]]:
    """(B, T) weights (0 outside ``response_mask``; all 1 with mode "none") and metrics over the response:
    ``rollout_correction/weight_mean`` (per token), ``over_threshold_frac`` (tokens or sequences truncated or
    masked) and the 5 / 50 / 95 % quantiles and max of rho (per token or per sequence, as the mode's level)."""
    if old_logprobs.shape != sampler_logprobs.shape or old_logprobs.shape != response_mask.shape:
        raise ValueError(f"rollout correction: old_logprobs {tuple(old_logprobs.shape)}, sampler_logprobs "
                         f"{tuple(sampler_logprobs.shape)} and response_mask {tuple(response_mask.shape)} differ")
    if mode not in CORRECTION_MODES:
        raise ValueError(f"rollout correction: unknown mode {mode!r}; known: {', '.join(CORRECTION_MODES)}")
    if not threshold > 1:
        raise ValueError(f"rollout correction: threshold must be > 1, got {threshold}")
    mask = as_bool_mask("rollout correction", response_mask)  # (B, T)
    dt = compute_dtype(old_logprobs, sampler_logprobs)
    zero = torch.zeros((), dtype=dt, device=old_logprobs.device)
    if mode == "none":
        return torch.where(mask, torch.ones((), dtype=dt, device=old_logprobs.device), zero), {}
    d = torch.where(mask, old_logprobs.detach().to(dt) - sampler_logprobs.detach().to(dt), zero)  # (B, T)
    if mode.startswith("token"):
        rho = per_token = d.exp()  # (B, T)
        units = mask
    else:
        rho = (d.sum(-1) / mask.sum(-1).clamp_min(1)).exp()  # (B,)
        units, per_token = mask.any(-1), rho[:, None].expand_as(d)
    w = per_token.clamp(max=threshold) if mode.endswith("truncate") else torch.where(per_token <= threshold,
                                                                                      per_token, zero)
    w = torch.where(mask, w, zero)  # (B, T)
    if not bool(mask.any()):
        return w, {}
    seen = rho[units].to(torch.float64)
    q = torch.quantile(seen, torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64, device=seen.device))
    return w, to_floats({"rollout_correction/weight_mean": masked_mean(w, mask),
                         "rollout_correction/over_threshold_frac": (seen > threshold).to(torch.float64).mean(),
                         "rollout_correction/ratio_q05": q[0], "rollout_correction/ratio_q50": q[1],
                         "rollout_correction/ratio_q95": q[2], "rollout_correction/ratio_max": seen.max()})
