"""The check every alternative forward layout (packed, shared prefix) passes against the padded forward."""

import pytest
import torch


def assert_same_forward(padded, other, response_mask: torch.Tensor, real: torch.Tensor) -> None:
    """``padded`` and ``other``: (PolicyForward, experts used per layer, gradients by name) of the same batch.
    Log-probs and entropy over the response tokens, every gradient (the vision tower's included), and for an MoE
    model the router logits and experts over the ``real`` tokens (flat padded layout) and the aux loss agree, float32
    rounding apart."""
    (a, used_a, grads_a), (b, used_b, grads_b) = padded, other
    mask = response_mask.bool()
    assert (a.logprobs - b.logprobs)[mask].abs().max() < 2e-6
    # entropy (~7 nats here, 4.8e-7 a float32 ulp) sums p log p over the vocabulary from log-softmaxes whose
    # inputs differ by rounding between layouts: up to 3.4e-6 apart observed (it is within 1.5e-6 of float64)
    assert (a.entropy - b.entropy)[mask].abs().max() < 5e-6
    assert grads_a.keys() == grads_b.keys() and any(".visual." in n for n in grads_a)
    scale = max(g.abs().max() for g in grads_a.values())
    for name, g in grads_a.items():
        torch.testing.assert_close(grads_b[name], g, rtol=1e-4, atol=1e-6 * scale, msg=name)
    if a.router_logits is not None:  # MoE: the same routing, logits and aux loss over the real tokens
        for x, y, ux, uy in zip(a.router_logits, b.router_logits, used_a, used_b):
            assert (x[real] - y[real]).abs().max() < 1e-6 and torch.equal(ux[real], uy[real])
        assert b.aux_loss.item() == pytest.approx(a.aux_loss.item(), rel=1e-6)
