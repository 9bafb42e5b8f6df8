"""Shared-prefix forwards: the G completions of a prompt read one forward of that prompt, and every output (log-probs,
entropy, router logits, aux loss, recorded routing, gradients) is the padded forward's, float32 rounding apart."""

import dataclasses
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from forward_checks import assert_same_forward

from sapo_vl.config import AlgoConfig, ModelConfig, RolloutConfig, TrainConfig
from sapo_vl.models.load import load_policy
from sapo_vl.models.logprobs import policy_forward
from sapo_vl.models.moe import routing
from sapo_vl.models.packing import Packing
from sapo_vl.models.prefix import SharedPrefix, forward_inputs, share_prefix, use_shared_prefix
from sapo_vl.models.tiny import TinyConfig, make_tiny_model
from sapo_vl.rollout import HFEngine, PromptFormat, SamplingParams, make_rollout, score_rollout
from sapo_vl.update import PolicyUpdate

RECORDS = [
    {"id": "a", "prompt": "What color is the shape?", "images": [Image.new("RGB", (64, 64), (200, 30, 30))]},
    {"id": "b", "prompt": "<image> or <image>?", "images": [Image.new("RGB", (96, 48), (30, 200, 30)),
                                                         Image.new("RGB", (32, 32), (30, 30, 200))]},
    {"id": "c", "prompt": "No picture here, just say a colour."},
]


@pytest.fixture(scope="module", params=["moe", "dense"])
def model_and_rollout(request, tiny_dir, tmp_path_factory):
    """The tiny policy (MoE or dense) and a sampled rollout of 3 prompts x 3 (one prompt with two images of
    different sizes, one with none), mixed the way a mini-batch mixes groups, completions of different lengths, with
    its advantages."""
    path = tiny_dir if request.param == "moe" else make_tiny_model(tmp_path_factory.mktemp("dense"),
                                                                   TinyConfig(moe=False))
    model, processor = load_policy(path)
    model.train()
    torch.manual_seed(0)
    rollout = make_rollout(HFEngine(model, processor), PromptFormat(processor), RECORDS, 3, SamplingParams(12, 1.0))
    mixed = rollout.select([0, 4, 1, 8, 3, 6, 2])
    for i in range(len(mixed)):  # completions of 6 to 12 tokens: padding after each, as after an EOS
        mixed.response_mask[i, 6 + i:] = 0
        mixed.completion_ids[i, 6 + i:] = processor.tokenizer.pad_token_id
    mixed.advantages = torch.tensor([1.2, -0.7, 0.4, -1.5, 0.9, 0.3, -0.2])
    mixed.path = path  # for a second copy of the policy (gradient checkpointing)
    return model, mixed


def _forward(model, batch, shared: bool):
    model.zero_grad(set_to_none=True)
    inputs, P = batch.model_inputs()
    layout = share_prefix(batch, inputs["attention_mask"]) if shared else None
    with routing(model) as used:
        out = policy_forward(model, inputs, P, with_entropy=True, packing=layout)
    (out.logprobs * batch.response_mask).sum().backward()
    if layout is not None and used and used[0] is not None:
        used = [layout.to_padded(u) for u in used]
    return out, used, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_shared_prefix_outputs_and_gradients_equal_the_padded_forward(model_and_rollout):
    model, batch = model_and_rollout
    layout = share_prefix(batch, batch.model_inputs()[0]["attention_mask"])
    assert layout.rows.tolist() == [0, 1, 0, 2, 1, 2, 0] and layout.prompt["input_ids"].shape[0] == 3
    assert layout.prompt["image_grid_thw"].shape[0] == 3  # the distinct prompts' images: 1 + 2 + 0
    assert batch.response_mask.sum() > 20
    assert_same_forward(_forward(model, batch, shared=False), _forward(model, batch, shared=True),
                        batch.response_mask, layout.mask.reshape(-1).bool())


def test_shared_prefix_under_gradient_checkpointing_equals_the_padded_forward(model_and_rollout):
    """A checkpointed layer's backward recompute reads the prompt cache again: written once, read the same."""
    model, batch = model_and_rollout
    checkpointed = load_policy(batch.path, ModelConfig(gradient_checkpointing=True))[0]
    checkpointed.train()
    assert any(getattr(m, "gradient_checkpointing", False) for m in checkpointed.modules())
    layout = share_prefix(batch, batch.model_inputs()[0]["attention_mask"])
    assert_same_forward(_forward(model, batch, shared=False), _forward(checkpointed, batch, shared=True),
                        batch.response_mask, layout.mask.reshape(-1).bool())
    assert not any("_can_checkpoint_with_cache" in vars(m) for m in checkpointed.modules())  # left as it was


def test_updates_with_and_without_shared_prefix_give_the_same_loss_and_gradients(model_and_rollout):
    model, batch = model_and_rollout
    old, recorded = score_rollout(model, batch, temperature=1.0, micro_batch_size=8)
    batch = dataclasses.replace(batch, old_logprobs=old + 0.2 * torch.randn(old.shape), routing=recorded)
    results = {}
    for mode in ("off", "auto"):
        update = PolicyUpdate(model, AlgoConfig(), TrainConfig(micro_batch_tokens=200, prefix_sharing=mode),
                              RolloutConfig(temperature=1.0))
        assert update.share == mode
        update.policy.zero_grad(set_to_none=True)
        metrics = update.accumulate(batch)
        results[mode] = metrics, {n: p.grad.clone() for n, p in update.policy.named_parameters() if p.grad is not None}
    (m_off, g_off), (m_on, g_on) = results["off"], results["auto"]
    assert m_off["micro_batches"] >= 2
    assert m_on["loss"] == pytest.approx(m_off["loss"], rel=1e-5, abs=1e-7)
    assert m_on["entropy"] == pytest.approx(m_off["entropy"], rel=1e-5)
    if recorded is not None:
        assert m_on["moe/routing_drift"] == m_off["moe/routing_drift"]
        assert m_on["moe/aux_loss"] == pytest.approx(m_off["moe/aux_loss"], rel=1e-5)
    scale = max(g.abs().max() for g in g_off.values())
    for name, g in g_off.items():
        torch.testing.assert_close(g_on[name], g, rtol=1e-4, atol=1e-6 * scale, msg=name)


def test_shared_old_logprobs_make_the_first_update_exactly_on_policy(model_and_rollout):
    """Rollout log-probs from shared-prefix forwards, as training computes them: ratio 1 exactly, the recorded
    routing that of the padded forward on every real token."""
    model, batch = model_and_rollout
    old, recorded = score_rollout(model, batch, temperature=1.0, micro_batch_size=len(batch), share="auto")
    on_policy = dataclasses.replace(batch, old_logprobs=old, routing=recorded)
    update = PolicyUpdate(model, AlgoConfig(), TrainConfig(micro_batch_tokens=10**6), RolloutConfig(temperature=1.0))
    metrics = update.accumulate(on_policy)
    assert update.share == "auto" and metrics["ratio/mean"] == 1.0
    if recorded is not None:
        assert metrics["moe/routing_drift"] == 0.0
        _, padded_routing = score_rollout(model, batch, temperature=1.0, micro_batch_size=len(batch))
        real = torch.cat([batch.prompt_mask, batch.response_mask], 1).bool()  # (N, P + C)
        assert torch.equal(recorded[real], padded_routing[real])


def test_no_shared_prefix_without_a_repeated_prompt_and_image(model_and_rollout):
    _, batch = model_and_rollout
    one_each = batch.select([0, 1, 3])  # three different prompts
    assert share_prefix(one_each, one_each.model_inputs()[0]["attention_mask"]) is None
    same_text = dataclasses.replace(batch.select([0, 2]), image_keys=["x", "y"])  # same tokens, other images
    assert share_prefix(same_text, same_text.model_inputs()[0]["attention_mask"]) is None


def test_forward_inputs_picks_the_layout_that_runs_the_fewest_tokens(model_and_rollout):
    model, batch = model_and_rollout
    _, _, layout = forward_inputs(model, batch, packed=True, share="auto")
    assert isinstance(layout, SharedPrefix)  # short completions after repeated prompts: sharing wins
    real = int(batch.model_inputs()[0]["attention_mask"].sum())
    assert layout.tokens < real < layout.mask.numel()
    pair = batch.select([0, 2])  # one prompt twice, its completions padded to the longest
    _, _, pair_layout = forward_inputs(model, pair, packed=False, share="auto")
    assert isinstance(pair_layout, SharedPrefix)
    _, _, unshared = forward_inputs(model, batch, packed=True, share="off")
    assert isinstance(unshared, Packing)
    inputs, _, nothing_to_remove = forward_inputs(model, batch.select([0]), packed=True, share="auto")
    assert inputs["attention_mask"].all() and nothing_to_remove is None  # no padding: the padded forward


def test_to_padded_repeats_each_prompt_row_for_its_sequences():
    layout = SharedPrefix(prompt={"input_ids": torch.zeros(2, 3, dtype=torch.long)}, rows=torch.tensor([1, 0, 1]),
                          mask=torch.ones(3, 5, dtype=torch.long))
    prompt = torch.arange(6).view(6, 1)  # 2 prompts x 3 tokens
    completion = 100 + torch.arange(6).view(6, 1)  # 3 sequences x 2 tokens
    padded = layout.to_padded(torch.cat([prompt, completion])).view(3, 5)
    assert padded.tolist() == [[3, 4, 5, 100, 101], [0, 1, 2, 102, 103], [3, 4, 5, 104, 105]]
    assert layout.tokens == 2 * 3 + 3 * 2


def test_shared_prefix_only_where_the_run_allows_it(tiny_dir):
    model = load_policy(tiny_dir)[0]
    assert use_shared_prefix(model, "auto", sharded=False) == "auto"  # under routing replay too: per call, or padded
    # FSDP2 would keep every layer's unsharded gradient alive between the two backward sweeps: off when sharded
    assert use_shared_prefix(model, "auto", sharded=True) == "off"
    assert use_shared_prefix(model, "off", sharded=False) == "off"
    other = SimpleNamespace(config=SimpleNamespace(model_type="llama"), modules=lambda: [])
    assert use_shared_prefix(other, "auto", sharded=False) == "off"
    with pytest.raises(ValueError, match="Input should be 'auto' or 'off'"):  # the config section refuses it
        TrainConfig(prefix_sharing="on")


def test_always_shares_a_micro_batch_without_repeats_and_stays_exact(model_and_rollout):
    """What FSDP2 ranks run: the two forward calls even when no prompt repeats (a rank's micro-batch may have none)."""
    model, batch = model_and_rollout
    distinct = batch.select([0, 1, 3])
    inputs, P, layout = forward_inputs(model, distinct, packed=True, share="always")
    assert isinstance(layout, SharedPrefix) and layout.rows.tolist() == [0, 1, 2]
    with torch.no_grad():
        shared = policy_forward(model, inputs, P, packing=layout).logprobs
        padded = policy_forward(model, inputs, P).logprobs
    mask = distinct.response_mask[:, :shared.shape[1]].bool()  # (3, 9): the all-padding columns trimmed
    assert shared.shape == padded.shape and (shared - padded)[mask].abs().max() < 2e-6
