"""Group-relative advantage estimators: ``fn(rewards: Tensor[N], group_ids: Tensor[N]) -> Tensor[N]``.

A group is the set of completions sampled for one prompt. ``group_ids`` may be any integers, in any order and
not contiguous (e.g. ``[7, 3, 7, 3]``); Python lists are accepted too. Statistics are computed in float64 and
returned in the rewards' dtype (float32 for integer rewards or lists).

Every estimator returns exactly 0 for a zero-variance group (all rewards equal, a group of one included):
such a group carries no learning signal. ``zero_variance_groups`` flags those samples (DAPO's dynamic sampling
drops them, arXiv 2503.14476).
"""

from __future__ import annotations

import torch
from torch import Tensor

from sapo_vl.algos.types import check_number
from sapo_vl.registry import Registry


def _prepare(owner: str, rewards: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor, int]:
    """Validate; return rewards as float64 (N,), dense group index (N,) in [0, G), and G."""
    if isinstance(rewards, (list, tuple)):
        rewards = torch.tensor(rewards, dtype=torch.get_default_dtype())
    if isinstance(group_ids, (list, tuple)):
        group_ids = torch.tensor(group_ids)
    if not isinstance(rewards, Tensor) or rewards.dim() != 1:
        raise ValueError(
            f"{owner}: rewards must be a 1-D tensor, got {getattr(rewards, 'shape', type(rewards).__name__)}"
        )
    if not isinstance(group_ids, Tensor) or tuple(group_ids.shape) != tuple(rewards.shape):
        raise ValueError(
            f"{owner}: group_ids must be a tensor with the shape of rewards {tuple(rewards.shape)}, "
            f"got {getattr(group_ids, 'shape', type(group_ids).__name__)}"
        )
    if group_ids.is_floating_point() or group_ids.is_complex() or group_ids.dtype == torch.bool:
        raise TypeError(f"{owner}: group_ids must be an integer tensor, got {group_ids.dtype}")
    r = rewards.to(torch.float64)  # (N,)
    bad = ~torch.isfinite(r)
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise ValueError(
            f"{owner}: reward of sample {i} is {rewards[i].item()} (group {int(group_ids[i])}); "
            f"rewards must be finite (map 'not applicable' rewards before computing advantages)"
        )
    _, index = torch.unique(group_ids, return_inverse=True)  # (N,) in [0, G)
    num_groups = int(index.max()) + 1 if index.numel() else 0
    return r, index, num_groups


def _group_mean(r: Tensor, index: Tensor, g: int) -> tuple[Tensor, Tensor]:
    """Per-sample group mean (N,) and group size (N,)."""
    counts = torch.zeros(g, dtype=torch.float64, device=r.device).index_add_(0, index, torch.ones_like(r))
    sums = torch.zeros(g, dtype=torch.float64, device=r.device).index_add_(0, index, r)
    return (sums / counts)[index], counts[index]


def _zero_variance(r: Tensor, index: Tensor, g: int) -> Tensor:
    """Bool (N,): the sample's group has max == min (exact, no tolerance)."""
    hi = torch.zeros(g, dtype=r.dtype, device=r.device).scatter_reduce(0, index, r, "amax", include_self=False)
    lo = torch.zeros(g, dtype=r.dtype, device=r.device).scatter_reduce(0, index, r, "amin", include_self=False)
    return (hi == lo)[index]


def _out(adv: Tensor, zero_var: Tensor, rewards: Tensor | list) -> Tensor:
    floating = isinstance(rewards, Tensor) and rewards.is_floating_point()
    dt = rewards.dtype if floating else torch.get_default_dtype()
    return torch.where(zero_var, torch.zeros_like(adv), adv).to(dt)


def zero_variance_groups(rewards: Tensor, group_ids: Tensor) -> Tensor:
    """BoolTensor[N]: True for samples whose group has all-equal rewards (including groups of one)."""
    r, index, g = _prepare("zero_variance_groups", rewards, group_ids)
    return _zero_variance(r, index, g)


def grpo_advantages(rewards: Tensor, group_ids: Tensor, *, eps: float = 1e-6) -> Tensor:
    """GRPO outcome advantages (DeepSeekMath, arXiv 2402.03300, Sec. 4.1.2): (r - mean_g) / (std_g + eps).

    std is the *unbiased* sample standard deviation (Bessel's correction, divide by n - 1). The paper only
    says "std"; its open implementations (and verl's / TRL's GRPO) use ``torch.std``, which is unbiased, so we
    match them. eps = 1e-6 keeps near-constant groups finite; exactly constant groups give 0.
    """
    eps = check_number("grpo advantages", "eps", eps, low=0.0)
    r, index, g = _prepare("grpo advantages", rewards, group_ids)
    mean, n = _group_mean(r, index, g)  # (N,), (N,)
    centered = r - mean  # (N,)
    sq = torch.zeros(g, dtype=torch.float64, device=r.device).index_add_(0, index, centered * centered)
    std = torch.sqrt(sq[index] / (n - 1).clamp(min=1))  # (N,)
    return _out(centered / (std + eps), _zero_variance(r, index, g), rewards)


def dr_grpo_advantages(rewards: Tensor, group_ids: Tensor) -> Tensor:
    """Dr.GRPO advantages (Liu et al., arXiv 2503.20783): r - mean_g, no std division (removes the
    question-difficulty bias). Use with aggregation ``"seq-mean-token-sum-norm"`` and the ``"grpo"`` loss."""
    r, index, g = _prepare("dr_grpo advantages", rewards, group_ids)
    mean, _ = _group_mean(r, index, g)
    return _out(r - mean, _zero_variance(r, index, g), rewards)


def rloo_advantages(rewards: Tensor, group_ids: Tensor) -> Tensor:
    """REINFORCE leave-one-out (Kool et al. 2019; Ahmadian et al., arXiv 2402.14740):
    r_i - mean of the OTHER samples of the group = n / (n - 1) * (r_i - mean_g). A group of one gives 0."""
    r, index, g = _prepare("rloo advantages", rewards, group_ids)
    mean, n = _group_mean(r, index, g)
    adv = (n / (n - 1).clamp(min=1)) * (r - mean)  # (N,)
    return _out(adv, _zero_variance(r, index, g), rewards)


ADVANTAGES = Registry("advantage", {
    "grpo": grpo_advantages,
    "dr_grpo": dr_grpo_advantages,
    "rloo": rloo_advantages,
})
register_advantage = ADVANTAGES.register
