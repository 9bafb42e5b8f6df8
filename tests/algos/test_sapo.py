"""SAPO formula tests: hand values, exact gradient weight, tau by advantage sign, float32 gate under bf16."""

import math

import pytest
import torch

from sapo_vl.algos import sapo_loss

F64 = torch.float64


def _one_token(log_ratio, adv, **hp):
    """A (1, 1) SAPO problem at a given log-ratio; returns (per-token loss, d loss / d logp)."""
    logp = torch.tensor([[log_ratio]], dtype=F64, requires_grad=True)
    old = torch.zeros(1, 1, dtype=F64)
    out = sapo_loss(
        logprobs=logp,
        old_logprobs=old,
        advantages=torch.tensor([adv], dtype=F64),
        response_mask=torch.ones(1, 1, dtype=torch.bool),
        **hp,
    )
    out.per_token_loss.sum().backward()
    return out.per_token_loss.item(), logp.grad.item()


def test_sapo_on_policy_loss_is_minus_two_over_tau_times_advantage():
    # r = 1: f = (4 / tau) * sigmoid(0) = 2 / tau.
    assert _one_token(0.0, 2.0)[0] == pytest.approx(-2.0 * 2.0 / 1.0, abs=1e-12)
    assert _one_token(0.0, -1.0)[0] == pytest.approx(+2.0 / 1.05, abs=1e-12)


def test_sapo_off_policy_value_matches_hand_computation():
    # r = 1.5, tau = 1: f = 4 * sigmoid(0.5) = 4 / (1 + e^-0.5) = 2.4898373...
    loss, _ = _one_token(math.log(1.5), 1.0)
    assert loss == pytest.approx(-4.0 / (1.0 + math.exp(-0.5)), abs=1e-12)
    assert loss == pytest.approx(-2.4898373, abs=1e-6)


def test_sapo_on_policy_gradient_equals_plain_policy_gradient():
    torch.manual_seed(0)
    logp = torch.randn(3, 4, dtype=F64, requires_grad=True)
    adv = torch.tensor([1.3, -0.7, 0.4], dtype=F64)
    mask = torch.ones(3, 4, dtype=torch.bool)
    sapo_loss(
        logprobs=logp, old_logprobs=logp.detach().clone(), advantages=adv, response_mask=mask
    ).per_token_loss.sum().backward()
    logp_pg = logp.detach().clone().requires_grad_(True)
    (-(adv[:, None] * logp_pg)).sum().backward()  # REINFORCE: weight 1 on every token
    torch.testing.assert_close(logp.grad, logp_pg.grad, rtol=0, atol=1e-14)


@pytest.mark.parametrize("adv,tau", [(1.7, 0.7), (-0.9, 2.0)])
def test_sapo_gradient_weight_is_sech2_times_ratio(adv, tau):
    # d loss / d logp = -A * sech^2(tau (r - 1) / 2) * r, tau = tau_pos (A > 0) or tau_neg (A < 0).
    for log_r in torch.linspace(-3.0, 3.0, 25, dtype=F64).tolist():
        _, grad = _one_token(log_r, adv, tau_pos=0.7, tau_neg=2.0)
        r = math.exp(log_r)
        expected = -adv * r / math.cosh(tau * (r - 1.0) / 2.0) ** 2
        assert grad == pytest.approx(expected, rel=1e-10, abs=1e-14), log_r


def test_sapo_gradient_is_not_a_detached_gate_times_grad_logp():
    # The known bug: f(r) * A * grad log p. At r = 2 that is -A * 4 sigmoid(1) = -2.92...,
    # not -A * sech^2(1/2) * 2.
    _, grad = _one_token(math.log(2.0), 1.0)
    assert grad == pytest.approx(-2.0 / math.cosh(0.5) ** 2, rel=1e-12)
    assert abs(grad - (-4.0 / (1.0 + math.exp(-1.0)))) > 1.0


def test_sapo_tau_is_chosen_by_advantage_sign():
    log_r = math.log(1.8)
    pos, _ = _one_token(log_r, 1.0, tau_pos=0.5, tau_neg=3.0)
    neg, _ = _one_token(log_r, -1.0, tau_pos=0.5, tau_neg=3.0)
    assert pos == pytest.approx(-(4 / 0.5) / (1 + math.exp(-0.5 * 0.8)), rel=1e-12)
    assert neg == pytest.approx(+(4 / 3.0) / (1 + math.exp(-3.0 * 0.8)), rel=1e-12)


def test_sapo_zero_advantage_contributes_nothing():
    loss, grad = _one_token(math.log(3.0), 0.0)
    assert loss == 0.0 and grad == 0.0


def test_sapo_bf16_inputs_compute_gate_in_float32():
    torch.manual_seed(0)
    logp = (torch.randn(4, 64) * 0.02 - 1.0).to(torch.bfloat16).requires_grad_(True)
    old = (logp.detach().float() + torch.randn(4, 64) * 0.01).to(torch.bfloat16)
    adv = torch.tensor([1.0, -1.0, 0.5, -2.0], dtype=torch.bfloat16)
    mask = torch.ones(4, 64, dtype=torch.bool)
    out = sapo_loss(logprobs=logp, old_logprobs=old, advantages=adv, response_mask=mask)
    assert out.per_token_loss.dtype == torch.float32
    # Reference: the same bf16 values, upcast exactly, in float64.
    ref = sapo_loss(
        logprobs=logp.detach().double(),
        old_logprobs=old.double(),
        advantages=adv.double(),
        response_mask=mask,
    ).per_token_loss
    torch.testing.assert_close(out.per_token_loss.double(), ref, rtol=0, atol=1e-5)
    # A gate evaluated in bf16 would be visibly off: this is what the upcast protects against.
    r16 = torch.exp(logp.detach() - old)
    naive = -(4.0 * torch.sigmoid(r16 - 1.0)) * adv[:, None]
    assert (naive.double() - ref).abs().max() > 1e-3
    out.per_token_loss.sum().backward()
    assert logp.grad.dtype == torch.bfloat16 and torch.isfinite(logp.grad.float()).all()


def test_sapo_gate_metrics_are_split_by_advantage_sign():
    log_r = torch.tensor([[0.0, math.log(3.0), math.log(0.2)], [0.0, 0.0, 0.0]], dtype=F64)
    mask = torch.tensor([[1, 1, 1], [0, 0, 0]], dtype=torch.bool)
    out = sapo_loss(
        logprobs=log_r,
        old_logprobs=torch.zeros_like(log_r),
        advantages=torch.tensor([1.0, -1.0]),
        response_mask=mask,
    )
    w = [1.0, 1 / math.cosh(1.0) ** 2, 1 / math.cosh(-0.4) ** 2]  # sech^2((r - 1) / 2), tau_pos = 1
    assert out.metrics["sapo/gate_mean_pos"] == pytest.approx(sum(w) / 3, rel=1e-12)
    assert out.metrics["sapo/gate_min_pos"] == pytest.approx(min(w), rel=1e-12)
    assert out.metrics["sapo/gate_frac_below_half_pos"] == pytest.approx(1 / 3)
    # The negative-advantage row is fully masked: no _neg keys rather than NaN.
    assert not any(k.endswith("_neg") for k in out.metrics)
    assert all(isinstance(v, float) and math.isfinite(v) for v in out.metrics.values())
