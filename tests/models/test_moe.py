"""MoE router statistics: HF-equal load-balancing loss, expert load, entropy, routing drift."""

import importlib

import pytest
import torch

from sapo_vl.models.moe import completion_topk, load_balancing_loss, router_stats, routing_drift


def test_load_balancing_loss_equals_transformers_with_and_without_mask():
    hf = importlib.import_module("transformers.models.qwen3_vl_moe.modeling_qwen3_vl_moe").load_balancing_loss_func
    g = torch.Generator().manual_seed(0)
    B, T, E, k = 3, 5, 8, 2
    logits = tuple(torch.randn(B * T, E, generator=g) for _ in range(2))
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [0, 1, 1, 1, 1]])
    assert torch.allclose(load_balancing_loss(logits, None, k), hf(logits, E, k, None), atol=1e-6)
    assert torch.allclose(load_balancing_loss(logits, mask, k), hf(logits, E, k, mask), atol=1e-6)


def test_router_stats_balanced_router_has_imbalance_one_and_max_entropy():
    E = 4
    logits = (torch.zeros(8, E) + torch.arange(8)[:, None].eq(torch.arange(E)[None] * 2).float() * 1e-3,)
    stats = router_stats(logits, None, top_k=1)
    assert abs(stats["moe/router_entropy"] - torch.log(torch.tensor(4.0)).item()) < 1e-3
    skewed = (torch.tensor([[5.0, 0, 0, 0]]).repeat(8, 1),)
    assert router_stats(skewed, None, top_k=1)["moe/load_imbalance"] == 4.0


def test_routing_drift_counts_only_masked_tokens_whose_expert_set_changed():
    B, T, P, E, k = 2, 6, 3, 4, 2
    base = torch.zeros(B * T, E)
    base[:, 0], base[:, 1] = 2.0, 1.0
    old = completion_topk((base,), B, P, k)  # (B, 3, 1, 2)
    moved = base.clone().view(B, T, E)
    moved[0, P + 1, 3] = 9.0  # token 1 of sample 0 now routes to {0, 3}
    moved[1, P + 2, 2] = 9.0  # masked-out token: must not count
    new = completion_topk((moved.view(B * T, E),), B, P, k)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    drift = routing_drift(old, new, mask)
    assert drift["moe/routing_drift"] == pytest.approx(1 / 5)
    assert drift["moe/routing_drift_any_layer"] == pytest.approx(1 / 5)
    # reordering the same set is not drift
    swapped = base.clone()
    swapped[:, 0], swapped[:, 1] = 1.0, 2.0
    assert routing_drift(old, completion_topk((swapped,), B, P, k), mask)["moe/routing_drift"] == 0.0
