"""Contract tests every policy loss must pass: masking, extreme ratios, dtypes, metrics, errors, registry."""

import math

import pytest
import torch

from sapo_vl import algos
from sapo_vl.algos import POLICY_LOSSES, aggregate, get_policy_loss
from sapo_vl.errors import UnknownNameError

F64 = torch.float64
ALL = sorted(POLICY_LOSSES)
# Loose clip bands so that gspo's default 3e-4 band does not make every gradient zero in these tests.
WIDE = {"gspo": {"eps_low": 0.5, "eps_high": 0.5}, "gspo-token": {"eps_low": 0.5, "eps_high": 0.5}}


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(3, 6, generator=g, dtype=F64) * 2.0
    old = logp + torch.randn(3, 6, generator=g, dtype=F64) * 0.3
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    adv = torch.tensor([[0.8] * 6, [-1.2] * 6, [0.3] * 6], dtype=F64)
    return logp, old, adv, mask


def _run(name, logp, old, adv, mask, **hp):
    logp = logp.detach().clone().requires_grad_(True)
    old = old.detach().clone().requires_grad_(True)
    adv = adv.detach().clone().requires_grad_(True)
    out = POLICY_LOSSES[name](
        logprobs=logp, old_logprobs=old, advantages=adv, response_mask=mask, **{**WIDE.get(name, {}), **hp}
    )
    aggregate(out.per_token_loss, mask, "seq-mean-token-mean").backward()
    # cispo detaches its importance weight, so old_logprobs is not in its graph: a None grad is a zero grad.
    grads = [torch.zeros_like(t) if t.grad is None else t.grad for t in (logp, old, adv)]
    return (out, *grads)


@pytest.mark.parametrize("name", ALL)
def test_masked_nan_and_inf_do_not_leak_into_loss_or_any_gradient(name):
    logp, old, adv, mask = _batch()
    clean = _run(name, logp, old, adv, mask)
    poison = torch.tensor([math.nan, math.inf, -math.inf])
    bad_logp, bad_old, bad_adv = logp.clone(), old.clone(), adv.clone()
    for i, t in enumerate((bad_logp, bad_old, bad_adv)):
        t[~mask] = poison[torch.arange(int((~mask).sum())) % 3].roll(i).to(F64)
    dirty = _run(name, bad_logp, bad_old, bad_adv, mask)
    torch.testing.assert_close(dirty[0].per_token_loss, clean[0].per_token_loss, rtol=0, atol=0)
    assert dirty[0].metrics == clean[0].metrics
    for g_dirty, g_clean in zip(dirty[1:], clean[1:]):
        assert torch.isfinite(g_dirty).all()
        torch.testing.assert_close(g_dirty, g_clean, rtol=0, atol=0)
        assert (g_dirty[~mask] == 0).all()
    assert (dirty[0].per_token_loss[~mask] == 0).all()


@pytest.mark.parametrize("name", ALL)
def test_nan_sequence_advantage_of_an_empty_row_does_not_leak(name):
    logp, old, _, mask = _batch()
    mask = mask.clone()
    mask[2] = False
    adv = torch.tensor([0.5, -0.5, math.nan], dtype=F64)
    out, g_logp, _, _ = _run(name, logp, old, adv, mask)
    assert torch.isfinite(out.per_token_loss).all() and torch.isfinite(g_logp).all()


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("log_ratio", [50.0, -50.0, 20.5, -20.5])
@pytest.mark.parametrize("adv", [1.0, -1.0])
def test_extreme_log_ratios_give_finite_loss_and_grads(name, log_ratio, adv):
    logp = torch.tensor([[-1.0, -2.0, -0.5]], dtype=F64)
    old = logp - torch.tensor([[log_ratio, 0.0, -log_ratio]], dtype=F64)
    for dtype in (F64, torch.float32, torch.bfloat16):
        out, g_logp, g_old, _ = _run(
            name,
            logp.to(dtype),
            old.to(dtype),
            torch.tensor([adv], dtype=dtype),
            torch.ones(1, 3, dtype=torch.bool),
        )
        assert torch.isfinite(out.per_token_loss).all(), dtype
        assert torch.isfinite(g_logp.float()).all() and torch.isfinite(g_old.float()).all(), dtype
        assert all(math.isfinite(v) for v in out.metrics.values()), dtype


@pytest.mark.parametrize("name", ALL)
def test_log_ratio_clip_is_a_hyperparameter(name):
    logp = torch.tensor([[0.0, 0.0]], dtype=F64)
    old = torch.tensor([[-5.0, 5.0]], dtype=F64)
    out = POLICY_LOSSES[name](
        logprobs=logp,
        old_logprobs=old,
        advantages=torch.ones(1, dtype=F64),
        response_mask=torch.ones(1, 2),
        log_ratio_clip=1.0,
    )
    assert out.metrics["ratio/max"] == pytest.approx(math.e)
    assert out.metrics["ratio/min"] == pytest.approx(1 / math.e)


@pytest.mark.parametrize("name", ALL)
def test_metrics_are_python_floats_over_masked_tokens_only(name):
    logp, old, adv, mask = _batch()
    old = old.clone()
    old[0, 5] = logp[0, 5] - 15.0  # masked: would dominate ratio/max if it leaked
    out, *_ = _run(name, logp, old, adv, mask)
    r = torch.exp(logp - old)[mask]
    assert out.metrics["ratio/max"] == pytest.approx(r.max().item(), rel=1e-12)
    assert out.metrics["ratio/min"] == pytest.approx(r.min().item(), rel=1e-12)
    assert out.metrics["ratio/mean"] == pytest.approx(r.mean().item(), rel=1e-12)
    assert out.metrics["approx_kl"] == pytest.approx((r - 1 - r.log()).mean().item(), rel=1e-10)
    assert all(type(v) is float for v in out.metrics.values())


@pytest.mark.parametrize("name", ALL)
def test_empty_mask_gives_zero_loss_and_no_nan_metrics(name):
    logp, old, adv, _ = _batch()
    mask = torch.zeros(3, 6, dtype=torch.bool)
    out, g_logp, _, _ = _run(name, logp, old, adv, mask)
    assert (out.per_token_loss == 0).all() and (g_logp == 0).all()
    assert out.metrics == {}


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, F64])
def test_loss_dtype_is_at_least_float32(name, dtype):
    logp, old, adv, mask = _batch()
    out = POLICY_LOSSES[name](
        logprobs=logp.to(dtype), old_logprobs=old.to(dtype), advantages=adv.to(dtype), response_mask=mask
    )
    assert out.per_token_loss.dtype == (F64 if dtype == F64 else torch.float32)


@pytest.mark.parametrize("name", ALL)
def test_numeric_mask_and_sequence_advantages_are_accepted(name):
    logp, old, adv, mask = _batch()
    a = _run(name, logp, old, adv, mask)[0].per_token_loss
    b = _run(name, logp, old, adv[:, 0], mask.to(torch.float32))[0].per_token_loss
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", ALL)
def test_unknown_hyperparameter_names_the_loss_and_valid_ones(name):
    logp, old, adv, mask = _batch()
    for exc in (TypeError, ValueError):
        with pytest.raises(exc) as info:
            POLICY_LOSSES[name](logprobs=logp, old_logprobs=old, advantages=adv, response_mask=mask, clip_eps=0.1)
        msg = str(info.value)
        assert name in msg and "clip_eps" in msg and "log_ratio_clip" in msg


@pytest.mark.parametrize("name", ALL)
def test_wrong_shapes_raise_a_clear_error(name):
    logp, old, adv, mask = _batch()
    fn = POLICY_LOSSES[name]
    with pytest.raises(ValueError, match="advantages must have shape"):
        fn(logprobs=logp, old_logprobs=old, advantages=torch.zeros(4), response_mask=mask)
    with pytest.raises(ValueError, match="old_logprobs must have the shape"):
        fn(logprobs=logp, old_logprobs=old[:, :5], advantages=adv, response_mask=mask)
    with pytest.raises(ValueError, match="logprobs must have shape"):
        fn(logprobs=logp[0], old_logprobs=old[0], advantages=adv[0], response_mask=mask[0])


def test_soft_mask_values_are_rejected():
    logp, old, adv, mask = _batch()
    with pytest.raises(ValueError, match="only 0/1"):
        POLICY_LOSSES["sapo"](logprobs=logp, old_logprobs=old, advantages=adv, response_mask=mask * 0.5)


@pytest.mark.parametrize("bad", [{"tau_pos": 0.0}, {"tau_neg": -1.0}, {"tau_pos": "1.0"}, {"log_ratio_clip": 0}])
def test_invalid_hyperparameter_values_are_rejected(bad):
    logp, old, adv, mask = _batch()
    with pytest.raises((TypeError, ValueError)):
        POLICY_LOSSES["sapo"](logprobs=logp, old_logprobs=old, advantages=adv, response_mask=mask, **bad)


def test_registry_has_the_contract_losses():
    assert {"sapo", "grpo", "gspo", "gspo-token", "cispo"} <= set(POLICY_LOSSES)
    assert {preset.policy_loss for preset in algos.ALGORITHMS.values()} <= set(POLICY_LOSSES)
    assert algos.loss_hparams("sapo") == {"tau_pos": 1.0, "tau_neg": 1.05, "log_ratio_clip": 20.0}


def test_an_algorithm_preset_registers_only_as_an_algorithm_preset(monkeypatch):
    preset = algos.AlgorithmPreset("grpo", "token-mean", "rloo", {"eps_low": 0.1})
    monkeypatch.setitem(algos.ALGORITHMS, "mine", None)  # restored (removed) after the test
    assert algos.ALGORITHMS.register("mine", preset, overwrite=True) is preset
    with pytest.raises(TypeError, match="algorithm preset 'theirs' must be AlgorithmPreset, got dict"):
        algos.ALGORITHMS.register("theirs", {"policy_loss": "grpo"})


def test_unknown_loss_name_lists_registered_names_and_the_closest():
    with pytest.raises(UnknownNameError) as info:
        get_policy_loss("sapoo")
    for name in ALL:
        assert repr(name) in str(info.value) or name in str(info.value)
    assert "did you mean 'sapo'" in str(info.value)


def test_dr_grpo_is_not_a_loss_and_the_error_points_at_its_preset():
    with pytest.raises(ValueError, match="seq-mean-token-sum-norm.*algo.preset=dr_grpo"):
        get_policy_loss("dr_grpo")
    with pytest.raises(UnknownNameError, match=r"^algo.policy_loss: unknown policy loss 'dapo'; .*algo.preset=dapo"):
        POLICY_LOSSES.check("dapo", "algo.policy_loss")


def test_a_registered_plugin_loss_is_found_by_name(monkeypatch):
    monkeypatch.setitem(POLICY_LOSSES, "_test_copy", POLICY_LOSSES["sapo"])
    assert get_policy_loss("_test_copy") is POLICY_LOSSES["sapo"]
    with pytest.raises(ValueError, match="already registered"):
        algos.register_policy_loss("sapo", POLICY_LOSSES["grpo"])
