"""KL estimators k1 / k2 / k3 to a reference policy: hand values, gradients, clamping, masking."""

import math

import pytest
import torch

from sapo_vl.algos import kl_penalty

F64 = torch.float64


def test_kl_estimators_match_hand_values():
    # pi_theta = 0.5, pi_ref = 0.25 -> log_r = log(ref / theta) = log 0.5.
    logp = torch.tensor([[math.log(0.5)]], dtype=F64)
    ref = torch.tensor([[math.log(0.25)]], dtype=F64)
    lr = math.log(0.5)
    assert kl_penalty(logp, ref, "k1").item() == pytest.approx(-lr, rel=1e-12)
    assert kl_penalty(logp, ref, "k2").item() == pytest.approx(0.5 * lr * lr, rel=1e-12)
    assert kl_penalty(logp, ref, "k3").item() == pytest.approx(0.5 - lr - 1.0, rel=1e-12)


def test_k3_gradient_is_one_minus_ref_over_theta():
    logp = torch.tensor([[-0.2, -1.5, -3.0]], dtype=F64, requires_grad=True)
    ref = torch.tensor([[-0.7, -1.0, -3.0]], dtype=F64)
    kl_penalty(logp, ref, "k3").sum().backward()
    torch.testing.assert_close(logp.grad, 1.0 - torch.exp(ref - logp.detach()), rtol=1e-12, atol=0)


@pytest.mark.parametrize("kind", ["k1", "k2", "k3"])
def test_kl_estimators_are_zero_when_policies_agree(kind):
    logp = torch.tensor([[-0.3, -2.0]], dtype=F64)
    assert (kl_penalty(logp, logp.clone(), kind) == 0).all()


def test_k3_clamps_the_log_ratio_and_stays_finite():
    logp = torch.tensor([[0.0, 0.0]], dtype=F64, requires_grad=True)
    ref = torch.tensor([[50.0, -50.0]], dtype=F64)
    kl = kl_penalty(logp, ref, "k3")
    assert kl[0].tolist() == pytest.approx([math.exp(20) - 20 - 1, math.exp(-20) + 20 - 1], rel=1e-12)
    kl.sum().backward()
    assert torch.isfinite(logp.grad).all()


def test_k1_and_k2_are_exact_at_extreme_log_ratios():
    logp, ref = torch.tensor([[0.0]], dtype=F64), torch.tensor([[-50.0]], dtype=F64)
    assert kl_penalty(logp, ref, "k1").item() == 50.0
    assert kl_penalty(logp, ref, "k2").item() == 1250.0


@pytest.mark.parametrize("kind", ["k1", "k2", "k3"])
def test_masked_positions_do_not_leak_into_kl_or_grads(kind):
    mask = torch.tensor([[1, 1, 0, 0]], dtype=torch.bool)
    logp = torch.tensor([[-0.5, -1.0, math.nan, -math.inf]], dtype=F64, requires_grad=True)
    ref = torch.tensor([[-0.7, -0.9, math.inf, math.nan]], dtype=F64)
    kl = kl_penalty(logp, ref, kind, mask)
    assert torch.isfinite(kl).all() and (kl[~mask] == 0).all()
    kl.sum().backward()
    assert torch.isfinite(logp.grad).all() and (logp.grad[~mask] == 0).all()


def test_kl_upcasts_bf16_to_float32():
    logp = torch.tensor([[-0.5, -1.0]], dtype=torch.bfloat16)
    assert kl_penalty(logp, logp - 0.1, "k3").dtype == torch.float32


def test_kl_unknown_kind_lists_valid_kinds():
    with pytest.raises(ValueError, match="k1.*k2.*k3"):
        kl_penalty(torch.zeros(1, 1), torch.zeros(1, 1), "k4")


def test_a_plugin_kl_estimator_is_computed_on_the_masked_log_ratio(monkeypatch):
    from sapo_vl.algos import KL_ESTIMATORS

    monkeypatch.setitem(KL_ESTIMATORS, "abs", lambda log_r, clip: log_r.abs())
    logp = torch.tensor([[-1.0, float("nan")]], dtype=torch.float64)
    ref = torch.tensor([[-3.0, 0.0]], dtype=torch.float64)
    kl = kl_penalty(logp, ref, "abs", torch.tensor([[1, 0]]))
    assert kl.tolist() == [[2.0, 0.0]]
