"""CUDA-only checks (skipped without a GPU): bf16 autocast training steps and the chunked log-prob backward."""

import json

import pytest
import torch
from helpers import naive_token_logprobs

from sapo_vl.models.logprobs import token_logprobs

pytestmark = pytest.mark.gpu


def test_chunked_logprobs_under_bf16_autocast_match_float32_on_cuda():
    torch.manual_seed(0)
    head = torch.nn.Linear(64, 4096, bias=False).cuda()
    hidden = torch.randn(300, 64, device="cuda", requires_grad=True)
    targets = torch.randint(0, 4096, (300,), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        lp, _ = token_logprobs(hidden, head, targets, chunk_size=64)
    lp.sum().backward()
    grad = hidden.grad.clone()
    hidden.grad = None
    ref, _ = naive_token_logprobs(hidden, head, targets)
    ref.sum().backward()
    assert lp.dtype == torch.float32
    assert torch.allclose(lp, ref, atol=0.05)
    assert torch.allclose(grad, hidden.grad, atol=0.05, rtol=0.05)


def test_two_sapo_steps_with_bf16_autocast_on_cuda(tmp_path, tiny_dir):
    from sapo_vl.config import load_config
    from sapo_vl.train import run

    cfg = load_config("recipes/tiny/demo.yaml", [
        f"output_dir={tmp_path}", f"model.path={tiny_dir}", "model.dtype=float32", "train.mixed_precision=bf16",
        "train.total_steps=2", "rollout.group_size=4", "rollout.prompts_per_step=2", "warmup.steps=2",
        "log.eval_limit=4", "log.plot=false", "log.progress=false"])
    run(cfg)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 2 and all(abs(x) < 1e3 for x in losses)


@pytest.mark.parametrize("attn", ["sdpa", "flash_attention_2"])
def test_packed_logprobs_equal_padded_on_cuda(tiny_dir, attn):
    """Packed forwards on CUDA: flash-attn varlen (bf16, so a bf16 tolerance), or sdpa once per sequence (fp32)."""
    from sapo_vl.config import ModelConfig
    from sapo_vl.data import build_synthetic_shapes
    from sapo_vl.models.load import load_policy
    from sapo_vl.models.logprobs import policy_forward
    from sapo_vl.models.packing import pack
    from sapo_vl.rollout import HFEngine, PromptFormat, SamplingParams, make_rollout
    from sapo_vl.rollout.types import to_device

    flash = attn == "flash_attention_2"
    if flash:
        pytest.importorskip("flash_attn")
    dtype = "bf16" if flash else "fp32"
    model, processor = load_policy(tiny_dir, ModelConfig(dtype=dtype, attn_implementation=attn), device="cuda")
    torch.manual_seed(0)
    ro = make_rollout(HFEngine(model, processor), PromptFormat(processor), build_synthetic_shapes("train", n=4), 3,
                      SamplingParams(max_new_tokens=12))
    ro.response_mask[::2, 6:] = 0  # uneven lengths
    with torch.no_grad():
        inputs, P = ro.model_inputs()
        padded = policy_forward(model, to_device(inputs, "cuda"), P).logprobs
        inputs, P, packing = pack(model, ro)
        packed = policy_forward(model, to_device(inputs, "cuda"), P, packing=packing).logprobs
    mask = ro.response_mask.bool().cuda()
    assert (padded - packed)[mask].abs().max() < (0.1 if flash else 1e-3)
