"""GRPO / PPO-clip loss against hand-computed PPO values, including DAPO clip-higher and dual clip."""

import math

import pytest
import torch

from sapo_vl.algos import grpo_loss

F64 = torch.float64


def _tokens(ratios, advs, **hp):
    """One sequence of tokens with given ratios/advantages; returns (losses, d loss_t / d logp_t, out)."""
    logp = torch.tensor([[math.log(r) for r in ratios]], dtype=F64, requires_grad=True)
    out = grpo_loss(
        logprobs=logp,
        old_logprobs=torch.zeros_like(logp),
        advantages=torch.tensor([advs], dtype=F64),
        response_mask=torch.ones_like(logp, dtype=torch.bool),
        **hp,
    )
    out.per_token_loss.sum().backward()
    return out.per_token_loss[0].tolist(), logp.grad[0].tolist(), out


# (ratio, advantage, expected loss, expected d loss / d logp) with eps_low = eps_high = 0.2.
# d(-A r)/dlogp = -A r on the unclipped branch; 0 on the clipped one.
PPO_CASES = [
    (1.1, 1.0, -1.1, -1.1),  # inside the band
    (1.5, 1.0, -1.2, 0.0),  # A > 0, r > 1.2: clipped
    (0.5, 1.0, -0.5, -0.5),  # A > 0, r < 0.8: min keeps the unclipped (pessimistic) branch
    (0.5, -1.0, 0.8, 0.0),  # A < 0, r < 0.8: clipped
    (1.5, -1.0, 1.5, 1.5),  # A < 0, r > 1.2: unclipped (pessimistic)
    (0.9, -2.0, 1.8, 1.8),  # inside the band
]


@pytest.mark.parametrize("ratio,adv,loss,grad", PPO_CASES)
def test_grpo_matches_hand_ppo_clip_values(ratio, adv, loss, grad):
    losses, grads, _ = _tokens([ratio], [adv])
    assert losses[0] == pytest.approx(loss, abs=1e-12)
    assert grads[0] == pytest.approx(grad, abs=1e-12)


def test_grpo_clip_higher_uses_separate_eps_high():
    losses, grads, _ = _tokens([1.25, 1.3, 0.75], [1.0, 1.0, -1.0], eps_low=0.2, eps_high=0.28)
    assert losses == pytest.approx([-1.25, -1.28, 0.8], abs=1e-12)
    assert grads == pytest.approx([-1.25, 0.0, 0.0], abs=1e-12)


def test_grpo_dual_clip_caps_negative_advantage_loss_at_c():
    # A = -1, c = 3: r = 5 -> max(5, 1.2) = 5 capped to 3 (no gradient); r = 2 -> 2 (gradient 2).
    losses, grads, out = _tokens([5.0, 2.0, 5.0], [-1.0, -1.0, 1.0], clip_ratio_c=3.0)
    assert losses == pytest.approx([3.0, 2.0, -1.2], abs=1e-12)
    assert grads == pytest.approx([0.0, 2.0, 0.0], abs=1e-12)
    assert out.metrics["dual_clip_frac"] == pytest.approx(1 / 3)


def test_grpo_without_dual_clip_lets_negative_advantage_loss_grow():
    losses, _, out = _tokens([5.0], [-1.0])
    assert losses == pytest.approx([5.0])
    assert out.metrics["dual_clip_frac"] == 0.0


def test_grpo_clip_fractions_count_the_active_clipped_branch():
    # active: (1.5, +) high; (0.5, -) low. Not active: (0.5, +), (1.5, -), (1.0, +), (3.0, 0).
    ratios = [1.5, 0.5, 0.5, 1.5, 1.0, 3.0]
    advs = [1.0, -1.0, 1.0, -1.0, 1.0, 0.0]
    _, _, out = _tokens(ratios, advs)
    assert out.metrics["clip_frac_high"] == pytest.approx(1 / 6)
    assert out.metrics["clip_frac_low"] == pytest.approx(1 / 6)
    assert out.metrics["clip_frac"] == pytest.approx(2 / 6)


@pytest.mark.parametrize("bad", [{"clip_ratio_c": 1.0}, {"clip_ratio_c": 0.5}, {"eps_low": 1.5}, {"eps_high": -0.1}])
def test_grpo_rejects_invalid_clip_settings(bad):
    with pytest.raises(ValueError):
        _tokens([1.0], [1.0], **bad)
