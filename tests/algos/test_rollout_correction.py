"""Rollout correction (TIS / MIS against the sampler's log-probs): weights and metrics equal the formulas in
float64, carry no gradient, and leave masked positions out."""

import math

import numpy as np
import pytest
import torch

from sapo_vl.algos import rollout_correction_weights

MASK = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)


def _logprobs(seed=0):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(3, 5, generator=g, dtype=torch.float64) * 3
    shift = torch.tensor([[0.9], [0.0], [-0.5]], dtype=torch.float64)  # one sequence's mean ratio over 2, one under
    sampler = old - shift - torch.randn(3, 5, generator=g, dtype=torch.float64) * 0.8  # ratios from ~0.1 to ~10
    old[~MASK], sampler[~MASK] = float("nan"), float("inf")  # padding may hold anything
    return old, sampler


def _by_formula(old, sampler, mode, threshold):
    """The definitions, element by element in Python floats."""
    w = torch.zeros(3, 5, dtype=torch.float64)
    for b in range(3):
        ts = [t for t in range(5) if MASK[b, t]]
        seq = math.exp(sum(old[b, t].item() - sampler[b, t].item() for t in ts) / len(ts))
        for t in ts:
            rho = math.exp(old[b, t].item() - sampler[b, t].item()) if mode.startswith("token") else seq
            w[b, t] = min(rho, threshold) if mode.endswith("truncate") else (rho if rho <= threshold else 0.0)
    return w


@pytest.mark.parametrize("mode", ["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"])
@pytest.mark.parametrize("threshold", [2.0, 1.3])
def test_weights_equal_the_truncated_or_masked_ratio_pi_old_over_pi_sampler(mode, threshold):
    old, sampler = _logprobs()
    w, metrics = rollout_correction_weights(old, sampler, MASK, mode, threshold)
    expected = _by_formula(old, sampler, mode, threshold)
    assert w.dtype == torch.float64 and torch.isfinite(w).all()
    torch.testing.assert_close(w, expected, rtol=1e-14, atol=0)
    d = (old - sampler).where(MASK, 0.0)
    rho = d.exp()[MASK] if mode.startswith("token") else (d.sum(-1) / MASK.sum(-1)).exp()
    assert metrics["rollout_correction/over_threshold_frac"] == pytest.approx((rho > threshold).double().mean())
    assert 0 < metrics["rollout_correction/over_threshold_frac"] < 1  # the threshold acts on some, not all
    assert metrics["rollout_correction/weight_mean"] == pytest.approx(expected[MASK].mean().item(), rel=1e-14)
    for key, q in (("q05", 0.05), ("q50", 0.5), ("q95", 0.95)):
        assert metrics[f"rollout_correction/ratio_{key}"] == pytest.approx(np.quantile(rho.numpy(), q))
    assert metrics["rollout_correction/ratio_max"] == pytest.approx(rho.max().item())


def test_the_weights_carry_no_gradient_the_weighted_loss_gradient_is_the_weight_times_the_loss_gradient():
    old, sampler = _logprobs(1)
    old, sampler = old.where(MASK, 0.0).requires_grad_(True), sampler.where(MASK, 0.0).requires_grad_(True)
    logprobs = (old.detach() + 0.1).requires_grad_(True)
    w, _ = rollout_correction_weights(old, sampler, MASK, "token_truncate")
    assert not w.requires_grad
    per_token = -torch.exp(logprobs - old.detach()) * 0.7  # a policy-gradient surrogate, advantage 0.7
    (per_token * w).where(MASK, 0.0).sum().backward()
    expected = (-torch.exp(logprobs.detach() - old.detach()) * 0.7 * w).where(MASK, 0.0)
    torch.testing.assert_close(logprobs.grad, expected, rtol=1e-14, atol=0)
    assert old.grad is None and sampler.grad is None


def test_mode_none_weighs_every_response_token_one_and_bad_input_is_a_clear_error():
    old, sampler = _logprobs()
    w, metrics = rollout_correction_weights(old, sampler, MASK, "none")
    assert torch.equal(w, MASK.double()) and metrics == {}
    with pytest.raises(ValueError, match="unknown mode 'token'; known: none, token_truncate"):
        rollout_correction_weights(old, sampler, MASK, "token")
    with pytest.raises(ValueError, match="threshold must be > 1, got 0.5"):
        rollout_correction_weights(old, sampler, MASK, "token_mask", 0.5)
    with pytest.raises(ValueError, match=r"sampler_logprobs \(3, 4\)"):
        rollout_correction_weights(old, sampler[:, :4], MASK, "token_mask")
