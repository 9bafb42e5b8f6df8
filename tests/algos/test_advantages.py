"""Group-relative advantages: hand values, unsorted group ids, leave-one-out, zero-variance groups, errors."""

import math

import pytest
import torch

from sapo_vl.algos import ADVANTAGES, zero_variance_groups

F64 = torch.float64


def test_grpo_advantages_use_unbiased_std_hand_values():
    # Group [1, 0, 1]: mean 2/3, unbiased std sqrt(((1/3)^2 * 2 + (2/3)^2) / 2) = sqrt(1/3).
    adv = ADVANTAGES["grpo"](torch.tensor([1.0, 0.0, 1.0], dtype=F64), torch.tensor([0, 0, 0]))
    std = math.sqrt(1 / 3)
    expected = [(1 / 3) / (std + 1e-6), (-2 / 3) / (std + 1e-6), (1 / 3) / (std + 1e-6)]
    assert adv.tolist() == pytest.approx(expected, rel=1e-12)


def test_grpo_advantages_two_sample_group_is_plus_minus_one_over_sqrt_two():
    # Unbiased: std([0, 1]) = 1/sqrt(2) -> +-0.7071; a biased std (0.5) would give +-1.
    adv = ADVANTAGES["grpo"](torch.tensor([0.0, 1.0], dtype=F64), torch.tensor([3, 3]))
    assert adv.tolist() == pytest.approx([-1 / math.sqrt(2), 1 / math.sqrt(2)], rel=1e-5)


@pytest.mark.parametrize("name", sorted(ADVANTAGES))
def test_unsorted_noncontiguous_group_ids_equal_per_group_computation(name):
    fn = ADVANTAGES[name]
    rewards = torch.tensor([0.3, 1.0, 0.9, 0.0, 0.5, 0.2, 1.0, 0.7], dtype=F64)
    ids = torch.tensor([42, -7, 42, 1000, -7, 42, 1000, 1000])
    out = fn(rewards, ids)
    for gid in ids.unique():
        sel = ids == gid
        torch.testing.assert_close(out[sel], fn(rewards[sel], torch.zeros(int(sel.sum()), dtype=torch.long)))


def test_dr_grpo_advantages_subtract_the_group_mean_only():
    adv = ADVANTAGES["dr_grpo"](torch.tensor([1.0, 0.0, 0.5, 4.0], dtype=F64), torch.tensor([1, 1, 1, 2]))
    assert adv.tolist() == pytest.approx([0.5, -0.5, 0.0, 0.0], abs=1e-12)


def test_rloo_subtracts_the_mean_of_the_other_samples():
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.25, 3.0], dtype=F64)
    ids = torch.tensor([5, 5, 9, 5, 9])
    adv = ADVANTAGES["rloo"](rewards, ids)
    for i in range(5):
        others = [rewards[j].item() for j in range(5) if j != i and ids[j] == ids[i]]
        assert adv[i].item() == pytest.approx(rewards[i].item() - sum(others) / len(others), abs=1e-12)


@pytest.mark.parametrize("name", sorted(ADVANTAGES))
def test_singleton_and_zero_variance_groups_give_exactly_zero(name):
    # 0.1 * 3 has a floating-point mean != 0.1, so a naive r - mean would not be exactly 0.
    rewards = torch.tensor([0.1, 0.1, 0.1, 7.0, 1.0, 0.0], dtype=F64)
    ids = torch.tensor([0, 0, 0, 1, 2, 2])
    adv = ADVANTAGES[name](rewards, ids)
    assert adv[:4].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert adv[4] > 0 > adv[5]


def test_zero_variance_groups_flags_constant_and_singleton_groups():
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, 2.0])
    ids = torch.tensor([3, 3, 8, 8, 4])
    assert zero_variance_groups(rewards, ids).tolist() == [True, True, False, False, True]


@pytest.mark.parametrize("name", sorted(ADVANTAGES))
def test_output_dtype_follows_rewards(name):
    ids = torch.tensor([0, 0, 1, 1])
    assert ADVANTAGES[name](torch.tensor([1, 0, 1, 1]), ids).dtype == torch.float32
    assert ADVANTAGES[name](torch.tensor([1.0, 0, 1, 1], dtype=F64), ids).dtype == F64
    assert ADVANTAGES[name](torch.tensor([1.0, 0, 1, 1], dtype=torch.bfloat16), ids).dtype == torch.bfloat16


def test_empty_input_gives_empty_output():
    assert ADVANTAGES["grpo"](torch.zeros(0), torch.zeros(0, dtype=torch.long)).shape == (0,)


def test_non_finite_reward_names_the_sample():
    with pytest.raises(ValueError, match="sample 2 .*group 9"):
        ADVANTAGES["grpo"](torch.tensor([1.0, 0.0, math.nan]), torch.tensor([9, 9, 9]))


def test_bad_group_ids_are_rejected():
    with pytest.raises(TypeError, match="integer"):
        ADVANTAGES["rloo"](torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="shape"):
        ADVANTAGES["rloo"](torch.tensor([1.0, 0.0]), torch.tensor([0, 1, 2]))


def test_python_lists_are_accepted():
    adv = ADVANTAGES["dr_grpo"]([1.0, 0.0, 2.0], [4, 4, 5])
    assert adv.dtype == torch.float32 and adv.tolist() == [0.5, -0.5, 0.0]
