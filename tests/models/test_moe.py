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


def _switch_loss_by_definition(logits, mask, k):
    """E * sum_e f_e P_e (Fedus et al. 2021, eqs. 4-6) written out with a one-hot, all layers pooled."""
    x = torch.cat(logits)  # (L * N, E)
    E = x.shape[-1]
    p = torch.softmax(x, -1)
    w = mask.reshape(-1).to(x.dtype).repeat(len(logits))  # (L * N,)
    routed = torch.nn.functional.one_hot(p.topk(k, -1).indices, E).to(x.dtype)  # (L * N, k, E)
    f = (routed * w[:, None, None]).sum(0) / w.sum()  # (k, E)
    return E * (f * ((p * w[:, None]).sum(0) / w.sum())[None]).sum()


def test_load_balancing_loss_value_and_gradient_equal_the_definition_in_float64():
    g = torch.Generator().manual_seed(1)
    B, T, E, k = 2, 7, 16, 4
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]])
    ours = tuple(torch.randn(B * T, E, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    ref = tuple(x.detach().clone().requires_grad_(True) for x in ours)
    value, expected = load_balancing_loss(ours, mask, k), _switch_loss_by_definition(ref, mask, k)
    assert value.dtype == torch.float64
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=0)
    value.backward()
    expected.backward()
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-15)


def test_load_balancing_loss_allocates_no_tokens_by_slots_by_experts_table():
    """The (tokens x k x E) one-hot (int64, then float) was the largest transient of the update at real sizes;
    the largest tensor now is the router probabilities (tokens x E)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    N, E, k = 512, 64, 8
    largest = []

    class Sizes(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    largest.append(t.numel())
            return out

    logits = (torch.randn(N, E),)
    with Sizes():
        load_balancing_loss(logits, None, k)
    assert max(largest) == N * E


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
