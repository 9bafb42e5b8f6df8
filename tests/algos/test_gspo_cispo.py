"""GSPO (sequence ratio), GSPO-token (== GSPO for sequence advantages) and CISPO (detached clipped weight)."""

import math

import pytest
import torch

from sapo_vl.algos import aggregate, cispo_loss, gspo_loss, gspo_token_loss

F64 = torch.float64


def _varied_batch(seed=0):
    """Four sequences of lengths 7, 3, 1, 5 whose mean log-ratios put them: clipped high (A > 0), inside the
    band, below the band with A > 0 (unclipped, pessimistic branch), clipped low (A < 0)."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(4, 7, dtype=torch.bool)
    for i, n in enumerate([7, 3, 1, 5]):
        mask[i, :n] = True
    noise = torch.randn(4, 7, generator=g, dtype=F64) * 1e-2
    noise = torch.where(mask, noise, 0.0)
    noise = noise - (noise.sum(-1, keepdim=True) / mask.sum(-1, keepdim=True)) * mask  # zero mean per row
    target = torch.tensor([[6e-4], [1e-4], [-5e-4], [-6e-4]], dtype=F64)
    logp = -torch.rand(4, 7, generator=g, dtype=F64)
    old = logp - (target + noise)
    adv = torch.tensor([1.0, -0.5, 2.0, -1.5], dtype=F64)
    return logp, old, adv, mask


def _loss_and_grad(fn, logp, old, adv, mask, mode="seq-mean-token-mean", **hp):
    x = logp.detach().clone().requires_grad_(True)
    out = fn(logprobs=x, old_logprobs=old, advantages=adv, response_mask=mask, **hp)
    total = aggregate(out.per_token_loss, mask, mode)
    total.backward()
    return total.item(), x.grad, out


def test_gspo_uses_length_normalised_sequence_ratio():
    # log r = [0.1, -0.1, 0.3] -> s = exp(mean) = exp(0.1); wide band so nothing is clipped.
    logp = torch.tensor([[0.1, -0.1, 0.3]], dtype=F64)
    total, grad, out = _loss_and_grad(
        gspo_loss,
        logp,
        torch.zeros_like(logp),
        torch.tensor([2.0], dtype=F64),
        torch.ones(1, 3, dtype=torch.bool),
        eps_low=0.5,
        eps_high=0.5,
    )
    s = math.exp(0.1)
    assert total == pytest.approx(-2.0 * s, rel=1e-12)
    # d(-A s)/d logp_t = -A s / n for every token of the sequence.
    torch.testing.assert_close(grad, torch.full((1, 3), -2.0 * s / 3, dtype=F64), rtol=1e-12, atol=0)
    assert out.metrics["gspo/seq_ratio_mean"] == pytest.approx(s, rel=1e-12)


def test_gspo_default_band_is_the_papers_3e4_4e4():
    logp = torch.tensor([[0.1, 0.1]], dtype=F64)
    total, grad, out = _loss_and_grad(
        gspo_loss,
        logp,
        torch.zeros_like(logp),
        torch.tensor([1.0], dtype=F64),
        torch.ones(1, 2, dtype=torch.bool),
    )
    assert total == pytest.approx(-(1 + 4e-4), rel=1e-12)
    assert (grad == 0).all() and out.metrics["clip_frac_high"] == 1.0
    total, _, out = _loss_and_grad(
        gspo_loss,
        -logp,
        torch.zeros_like(logp),
        torch.tensor([-1.0], dtype=F64),
        torch.ones(1, 2, dtype=torch.bool),
    )
    assert total == pytest.approx(1 - 3e-4, rel=1e-12) and out.metrics["clip_frac_low"] == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gspo_token_equals_gspo_for_sequence_advantages(seed):
    logp, old, adv, mask = _varied_batch(seed)
    a_total, a_grad, a_out = _loss_and_grad(gspo_loss, logp, old, adv, mask)
    b_total, b_grad, _b_out = _loss_and_grad(gspo_token_loss, logp, old, adv, mask)
    assert 0 < a_out.metrics["clip_frac"] < 1  # both clipped and unclipped sequences are exercised
    assert b_total == pytest.approx(a_total, rel=1e-12)
    torch.testing.assert_close(b_grad, a_grad, rtol=1e-10, atol=1e-15)
    # Per-token advantages that are constant within each sequence are the same thing.
    c_total, c_grad, _ = _loss_and_grad(gspo_token_loss, logp, old, adv[:, None].expand(4, 7), mask)
    assert c_total == pytest.approx(a_total, rel=1e-12)
    torch.testing.assert_close(c_grad, a_grad, rtol=1e-10, atol=1e-15)


def test_gspo_token_gradient_is_local_to_each_token_advantage():
    # s_i,t = sg[s_i] * pi/sg[pi]: d loss_t / d logp_t = -A_t s_i, no cross-token terms.
    logp = torch.tensor([[0.02, -0.01, 0.05]], dtype=F64)
    adv = torch.tensor([[1.0, -2.0, 0.5]], dtype=F64)
    x = logp.clone().requires_grad_(True)
    out = gspo_token_loss(
        logprobs=x,
        old_logprobs=torch.zeros_like(logp),
        advantages=adv,
        response_mask=torch.ones(1, 3, dtype=torch.bool),
        eps_low=0.5,
        eps_high=0.5,
    )
    out.per_token_loss.sum().backward()
    s = math.exp(logp.mean().item())
    torch.testing.assert_close(x.grad, -adv * s, rtol=1e-12, atol=0)


def test_gspo_sequence_ratio_is_clamped_after_averaging():
    logp = torch.tensor([[60.0, 20.0]], dtype=F64)  # mean log-ratio 40 -> clamped to 20
    for fn in (gspo_loss, gspo_token_loss):
        _, grad, out = _loss_and_grad(
            fn,
            logp,
            torch.zeros_like(logp),
            torch.tensor([-1.0], dtype=F64),
            torch.ones(1, 2, dtype=torch.bool),
        )
        assert out.metrics["gspo/seq_ratio_max"] == pytest.approx(math.exp(20.0), rel=1e-12)
        assert torch.isfinite(grad).all()


# ---------------------------------------------------------------------------------------------------- CISPO
@pytest.mark.parametrize("eps_low,eps_high", [(None, 4.0), (0.5, 0.28)])
def test_cispo_gradient_is_detached_clipped_ratio_times_advantage(eps_low, eps_high):
    ratios = torch.tensor([[1e-3, 0.3, 0.9, 1.0, 1.2, 1.5, 4.0, 7.0]], dtype=F64)
    adv = torch.tensor([[1.0, -1.0, 2.0, -0.5, 1.0, -1.0, 0.7, 1.0]], dtype=F64)
    old = torch.full_like(ratios, -2.0)
    x = (old + ratios.log()).requires_grad_(True)
    out = cispo_loss(
        logprobs=x,
        old_logprobs=old,
        advantages=adv,
        response_mask=torch.ones_like(x),
        eps_low=eps_low,
        eps_high=eps_high,
    )
    out.per_token_loss.sum().backward()
    weight = ratios.clamp(min=None if eps_low is None else 1 - eps_low, max=1 + eps_high)
    torch.testing.assert_close(x.grad, -weight * adv, rtol=1e-12, atol=0)
    torch.testing.assert_close(out.per_token_loss, -weight * adv * x.detach(), rtol=1e-12, atol=0)


def test_cispo_defaults_cap_the_weight_at_five_with_no_lower_clip():
    ratios = [1e-4, 4.9, 5.5]
    logp = torch.tensor([[math.log(r) for r in ratios]], dtype=F64, requires_grad=True)
    out = cispo_loss(
        logprobs=logp,
        old_logprobs=torch.zeros_like(logp),
        advantages=torch.ones(1, dtype=F64),
        response_mask=torch.ones(1, 3, dtype=torch.bool),
    )
    out.per_token_loss.sum().backward()
    assert logp.grad[0].tolist() == pytest.approx([-1e-4, -4.9, -5.0], rel=1e-12)
    assert out.metrics["clip_frac_high"] == pytest.approx(1 / 3)
    assert out.metrics["clip_frac_low"] == 0.0


def test_cispo_preset_aggregation_is_token_mean():
    from sapo_vl.algos import ALGORITHMS

    assert ALGORITHMS["cispo"].aggregation == "token-mean"
