"""Aggregation modes against hand values, error handling, and micro-batch invariance (values, gradients)."""

import math

import pytest
import torch

from sapo_vl.algos import AGGREGATION_MODES, aggregate, global_normalizers, sapo_loss

F64 = torch.float64
NAN = math.nan

# Three sequences: lengths 2, 3 and 0 (empty). Masked positions hold NaN / inf.
LOSS = torch.tensor([[1.0, 3.0, NAN], [2.0, 4.0, 6.0], [math.inf, NAN, -math.inf]], dtype=F64)
MASK = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 0, 0]], dtype=torch.bool)

HAND = {
    "token-mean": (1 + 3 + 2 + 4 + 6) / 5,  # 16 / 5 tokens
    "seq-mean-token-mean": ((1 + 3) / 2 + (2 + 4 + 6) / 3) / 2,  # (2 + 4) / 2 non-empty sequences
    "seq-mean-token-sum": ((1 + 3) + (2 + 4 + 6)) / 2,  # (4 + 12) / 2
    "seq-mean-token-sum-norm": ((1 + 3) / 4 + (2 + 4 + 6) / 4) / 2,  # max_len = 4
}
KW = {"seq-mean-token-sum-norm": {"max_len": 4}}


@pytest.mark.parametrize("mode", AGGREGATION_MODES)
def test_aggregate_matches_hand_values_and_ignores_masked_garbage(mode):
    x = LOSS.clone().requires_grad_(True)
    out = aggregate(x, MASK, mode, **KW.get(mode, {}))
    assert out.dim() == 0
    assert out.item() == pytest.approx(HAND[mode], rel=1e-12)
    out.backward()
    assert torch.isfinite(x.grad).all() and (x.grad[~MASK] == 0).all()


def test_aggregate_default_mode_is_seq_mean_token_mean():
    assert aggregate(LOSS, MASK).item() == pytest.approx(HAND["seq-mean-token-mean"])


@pytest.mark.parametrize("mode", AGGREGATION_MODES)
def test_aggregate_of_all_empty_batch_is_zero_with_a_graph(mode):
    x = torch.randn(2, 3, dtype=F64, requires_grad=True)
    out = aggregate(x, torch.zeros(2, 3), mode, **KW.get(mode, {}))
    assert out.item() == 0.0
    out.backward()
    assert (x.grad == 0).all()


def test_aggregate_unknown_mode_lists_valid_modes():
    with pytest.raises(ValueError) as info:
        aggregate(LOSS, MASK, "sum")
    for mode in AGGREGATION_MODES:
        assert mode in str(info.value)


def test_unknown_mode_checked_for_a_config_key_names_the_key_and_the_closest_mode():
    with pytest.raises(ValueError, match=r"^algo.aggregation: unknown aggregation mode 'token_mean'; registered "
                                         r"aggregation modes: .*\(did you mean 'token-mean'\?\)$"):
        AGGREGATION_MODES.check("token_mean", "algo.aggregation")


def test_a_plugin_mode_is_aggregated_with_the_full_batch_counts_and_its_own_arguments(monkeypatch):
    def scaled(loss, n_tok, *, num_tokens, num_seqs, scale):
        return loss.sum() * scale / num_seqs

    monkeypatch.setitem(AGGREGATION_MODES, "scaled-token-sum", scaled)  # registered for this test only
    assert aggregate(LOSS, MASK, "scaled-token-sum", scale=2.0).item() == pytest.approx(16 * 2 / 2)
    assert aggregate(LOSS, MASK, "scaled-token-sum", scale=1.0, global_num_seqs=4).item() == pytest.approx(4.0)
    with pytest.raises(ValueError, match=r"missing required argument\(s\) \['scale'\]"):
        aggregate(LOSS, MASK, "scaled-token-sum")


@pytest.mark.parametrize(
    "mode,kwargs",
    [
        ("token-mean", {"max_len": 4}),
        ("seq-mean-token-mean", {"max_len": 4}),
        ("seq-mean-token-sum", {"loss_scale_factor": 2}),
        ("seq-mean-token-sum-norm", {"max_len": 4, "num_tokens": 5}),
    ],
)
def test_aggregate_rejects_unknown_kwargs_listing_valid_ones(mode, kwargs):
    with pytest.raises(ValueError) as info:
        aggregate(LOSS, MASK, mode, **kwargs)
    msg = str(info.value)
    assert "unknown argument" in msg and mode in msg
    assert "global_num_tokens" in msg.split("valid ones")[1] and "global_num_seqs" in msg.split("valid ones")[1]


def test_dr_grpo_mode_requires_max_len():
    with pytest.raises(ValueError, match="max_len"):
        aggregate(LOSS, MASK, "seq-mean-token-sum-norm")


def test_dr_grpo_mode_rejects_a_sequence_longer_than_max_len():
    with pytest.raises(ValueError, match="sequence 1 has 3 response tokens > max_len=2"):
        aggregate(LOSS, MASK, "seq-mean-token-sum-norm", max_len=2)


def test_global_count_smaller_than_local_count_is_an_error():
    with pytest.raises(ValueError, match="full batch"):
        aggregate(LOSS, MASK, "token-mean", global_num_tokens=3)
    # The count a mode does not use is still checked, never silently ignored.
    with pytest.raises(ValueError, match="global_num_seqs"):
        aggregate(LOSS, MASK, "token-mean", global_num_tokens=5, global_num_seqs=1)


def test_global_count_may_be_a_tensor():
    out = aggregate(LOSS, MASK, "token-mean", global_num_tokens=torch.tensor(10))
    assert out.item() == pytest.approx(16 / 10)


def test_global_normalizers_count_tokens_and_nonempty_sequences():
    assert global_normalizers(MASK) == {"global_num_tokens": 5, "global_num_seqs": 2}
    assert global_normalizers(MASK, max_len=8) == {"global_num_tokens": 5, "global_num_seqs": 2, "max_len": 8}


# ------------------------------------------------------------------------------------- micro-batch invariance
def _ragged(seed=0, b=7, t=9):
    g = torch.Generator().manual_seed(seed)
    lengths = [9, 1, 0, 4, 7, 2, 5][:b]  # different lengths, one empty sequence
    mask = torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]  # (B, T)
    logp = -torch.rand(b, t, generator=g, dtype=F64) * 3
    old = logp + torch.randn(b, t, generator=g, dtype=F64) * 0.5
    old[~mask] = NAN
    adv = torch.randn(b, generator=g, dtype=F64)
    return logp, old, adv, mask


SPLITS = [(0, 2), (2, 3), (3, 6), (6, 7)]  # uneven micro-batches; (2, 3) holds only the empty sequence


@pytest.mark.parametrize("mode", AGGREGATION_MODES)
def test_sum_of_micro_batch_aggregates_equals_full_batch(mode):
    logp, old, adv, mask = _ragged()
    loss = torch.where(mask, (logp - old) * adv[:, None], NAN)  # NaN outside: must not matter
    extra = {"max_len": 9} if mode.endswith("norm") else {}
    full = aggregate(loss, mask, mode, **extra)
    kw = global_normalizers(mask, **extra)
    micro = sum(aggregate(loss[a:b], mask[a:b], mode, **kw) for a, b in SPLITS)
    assert micro.item() == pytest.approx(full.item(), rel=1e-12)
    # Without the global normaliser the naive sum is wrong (so this test can fail).
    naive = sum(aggregate(loss[a:b], mask[a:b], mode, **extra) for a, b in SPLITS)
    assert naive.item() != pytest.approx(full.item(), rel=1e-6)


@pytest.mark.parametrize("mode", AGGREGATION_MODES)
def test_accumulated_sapo_gradients_equal_full_batch_gradients(mode):
    logp, old, adv, mask = _ragged(seed=1)
    kw = global_normalizers(mask, **({"max_len": 9} if mode.endswith("norm") else {}))

    full_x = logp.clone().requires_grad_(True)
    out = sapo_loss(logprobs=full_x, old_logprobs=old, advantages=adv, response_mask=mask)
    aggregate(out.per_token_loss, mask, mode, **kw).backward()

    micro_x = logp.clone().requires_grad_(True)
    for a, b in SPLITS:
        part = sapo_loss(logprobs=micro_x[a:b], old_logprobs=old[a:b], advantages=adv[a:b], response_mask=mask[a:b])
        aggregate(part.per_token_loss, mask[a:b], mode, **kw).backward()  # accumulates into micro_x.grad

    assert torch.isfinite(micro_x.grad).all()
    torch.testing.assert_close(micro_x.grad, full_x.grad, rtol=1e-12, atol=1e-15)
