"""Chunked log-probs equal the naive full log-softmax, gradients included, and use far less peak memory."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import naive_token_logprobs

from sapo_vl.models.logprobs import token_logprobs


def _head_and_inputs(V=3000, H=32, N=70, seed=0):
    g = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(H, V, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(V, H, generator=g) * 0.3)
    hidden = torch.randn(N, H, generator=g, requires_grad=True)
    return head, hidden, torch.randint(0, V, (N,), generator=g)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_chunked_logprobs_and_entropy_equal_naive_in_float32(temperature):
    head, hidden, targets = _head_and_inputs()
    for chunk in (1, 7, 64, 1000):
        lp, ent = token_logprobs(hidden, head, targets, chunk_size=chunk, with_entropy=True, temperature=temperature)
        ref, ref_ent = naive_token_logprobs(hidden, head, targets, temperature=temperature)
        assert torch.allclose(lp, ref, atol=1e-5), chunk
        assert torch.allclose(ent, ref_ent, atol=1e-5), chunk


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_chunked_logprob_gradients_equal_naive(temperature):
    head, hidden, targets = _head_and_inputs()
    w = torch.randn(len(targets))
    lp, _ = token_logprobs(hidden, head, targets, chunk_size=16, temperature=temperature)
    (lp * w).sum().backward()
    g_hidden, g_head = hidden.grad.clone(), head.weight.grad.clone()
    hidden.grad = None
    head.weight.grad = None
    ref, _ = naive_token_logprobs(hidden, head, targets, temperature=temperature)
    (ref * w).sum().backward()
    assert torch.allclose(g_hidden, hidden.grad, atol=1e-5)
    assert torch.allclose(g_head, head.weight.grad, atol=1e-5)


_PEAK_SCRIPT = r"""
import json, resource, sys, torch
sys.path.insert(0, sys.argv[2])  # tests/, for helpers
from helpers import naive_token_logprobs
from sapo_vl.models.logprobs import token_logprobs
V, H, N = 151936, 64, 512          # Qwen3-VL's real vocabulary size
torch.manual_seed(0)
head = torch.nn.Linear(H, V, bias=False)
hidden = torch.randn(N, H, requires_grad=True)
targets = torch.randint(0, V, (N,))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if sys.argv[1] == "naive":
    lp, _ = naive_token_logprobs(hidden, head, targets)
else:
    lp, _ = token_logprobs(hidden, head, targets, chunk_size=32, with_entropy=True)
lp.sum().backward()
print(json.dumps({"peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base}))
"""


def _peak_kb(mode):
    tests = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, mode, tests], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_kb"]


def test_chunked_logprobs_peak_memory_is_a_fraction_of_naive_at_real_vocab_size():
    naive, chunked = _peak_kb("naive"), _peak_kb("chunked")
    # naive holds several (512, 151936) float32 tensors (~311 MB each); chunked only (32, 151936) ones
    assert naive > 500_000, naive
    assert chunked < 0.35 * naive, (chunked, naive)


def test_bf16_hidden_and_head_give_float32_logprobs_close_to_float32_reference():
    head, hidden, targets = _head_and_inputs()
    ref, _ = naive_token_logprobs(hidden.detach(), head, targets)
    head_bf16 = torch.nn.Linear(head.in_features, head.out_features, bias=False).to(torch.bfloat16)
    with torch.no_grad():
        head_bf16.weight.copy_(head.weight)
    h = hidden.detach().to(torch.bfloat16).requires_grad_(True)
    lp, _ = token_logprobs(h, head_bf16, targets, chunk_size=16)
    assert lp.dtype == torch.float32
    assert torch.allclose(lp, ref, atol=0.1)
    lp.sum().backward()
    assert h.grad.dtype == torch.bfloat16 and torch.isfinite(h.grad.float()).all()
    assert head_bf16.weight.grad.dtype == torch.bfloat16
