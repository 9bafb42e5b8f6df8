"""Padding-free packed micro-batches: the log-probs, gradients and MoE statistics of the padded forward (float32
rounding apart), attention kept within each sequence, chosen automatically only where exact."""

import dataclasses
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from forward_checks import assert_same_forward

from sapo_vl.config import AlgoConfig, RolloutConfig, TrainConfig
from sapo_vl.errors import UserError
from sapo_vl.models.load import load_policy
from sapo_vl.models.logprobs import policy_forward
from sapo_vl.models.moe import routing
from sapo_vl.models.packing import SDPA_PER_SEQUENCE, pack, use_packing
from sapo_vl.models.tiny import TinyConfig, make_tiny_model
from sapo_vl.rollout import PromptFormat, score_rollout
from sapo_vl.update import PolicyUpdate
from sapo_vl.warmup import supervised_batch

RECORDS = [
    {"id": "a", "prompt": "What color is the shape?", "images": [Image.new("RGB", (64, 64), (200, 30, 30))]},
    {"id": "b", "prompt": "<image> or <image>?", "images": [Image.new("RGB", (96, 48), (30, 200, 30)),
                                                         Image.new("RGB", (32, 32), (30, 30, 200))]},
    {"id": "c", "prompt": "No picture here, just say a colour."},
    {"id": "d", "prompt": "Name it.", "images": [Image.new("RGB", (128, 64), (90, 90, 20))]},
    {"id": "e", "prompt": "Which colour do you see here?", "images": [Image.new("RGB", (48, 96), (10, 120, 200))]},
]
TARGETS = ["red", "it is a light blue shape with two five and the colour is green", "", "blue blue", "yellow one"]


@pytest.fixture(scope="module", params=["moe", "dense"])
def model_and_batch(request, tiny_dir, tmp_path_factory):
    """The tiny policy (MoE, or dense) and a batch with uneven prompts and responses, images of several sizes (one
    prompt with two, one with none), off-policy old log-probs and the MoE routing recorded by a padded forward."""
    path = tiny_dir if request.param == "moe" else make_tiny_model(tmp_path_factory.mktemp("dense"),
                                                                   TinyConfig(moe=False))
    model, processor = load_policy(path)
    model.train()
    batch = supervised_batch(PromptFormat(processor), RECORDS, TARGETS)
    old, batch.routing = score_rollout(model, batch, temperature=1.0, micro_batch_size=8)
    batch.old_logprobs = old + 0.3 * torch.randn(old.shape, generator=torch.Generator().manual_seed(0))
    batch.advantages = torch.tensor([1.2, -0.7, 0.4, -1.5, 0.9])
    return model, batch


def _forward(model, batch, packed: bool):
    """Log-probs, entropy, router logits, aux loss and the gradients of sum(log-probs), padded or packed."""
    model.zero_grad(set_to_none=True)
    if packed:
        inputs, P, packing = pack(model, batch)
    else:
        (inputs, P), packing = batch.model_inputs(), None
    with routing(model) as used:
        out = policy_forward(model, inputs, P, with_entropy=True, packing=packing)
    (out.logprobs * batch.response_mask).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    if packing is not None and used:
        used = [packing.to_padded(u) for u in used]
    return out, used, grads


def test_packed_logprobs_entropy_and_gradients_equal_the_padded_ones(model_and_batch):
    model, batch = model_and_batch
    assert_same_forward(_forward(model, batch, packed=False), _forward(model, batch, packed=True),
                        batch.response_mask, batch.model_inputs()[0]["attention_mask"].reshape(-1).bool())


def test_a_packed_sequence_attends_to_nothing_of_its_neighbours(model_and_batch):
    model, batch = model_and_batch
    changed = dataclasses.replace(batch, completion_ids=batch.completion_ids.clone())
    changed.completion_ids[1, :5] = (changed.completion_ids[1, :5] + 7) % 200  # sequence 1 only
    with torch.no_grad():
        packed = [pack(model, b) for b in (batch, changed)]
        before, after = (policy_forward(model, inputs, P, packing=packing).logprobs for inputs, P, packing in packed)
    others = [0, 2, 3, 4]
    mask = batch.response_mask[others].bool()
    assert (before[others] - after[others])[mask].abs().max() < 1e-6
    assert not torch.allclose(before[1], after[1])


def test_updates_packed_and_padded_give_the_same_gradients_with_routing_replay(model_and_batch):
    """Several micro-batches (the budget counts real tokens when packed, padded tokens otherwise), every aggregation
    normaliser global, routing replay on for the MoE model: the same loss and gradients either way."""
    model, batch = model_and_batch
    moe = batch.routing is not None
    results = {}
    for mode in ("off", "on"):
        update = PolicyUpdate(model, AlgoConfig(routing_replay="rollout" if moe else "none"),
                              TrainConfig(micro_batch_tokens=70, packing=mode), RolloutConfig(temperature=1.0))
        assert update.packed == (mode == "on")
        update.policy.zero_grad(set_to_none=True)
        metrics = update.accumulate(batch)
        results[mode] = metrics, {n: p.grad.clone() for n, p in update.policy.named_parameters() if p.grad is not None}
    (m_off, g_off), (m_on, g_on) = results["off"], results["on"]
    assert m_off["micro_batches"] >= 3 and m_on["micro_batches"] >= 2
    assert m_on["loss"] == pytest.approx(m_off["loss"], rel=1e-5, abs=1e-7)
    scale = max(g.abs().max() for g in g_off.values())
    for name, g in g_off.items():
        torch.testing.assert_close(g_on[name], g, rtol=1e-4, atol=1e-6 * scale, msg=name)
    if moe:
        assert m_on["moe/routing_drift"] == m_off["moe/routing_drift"] == 0.0  # replayed exactly, packed too


def test_packed_old_logprobs_make_the_first_update_exactly_on_policy(model_and_batch):
    """Rollout log-probs from packed forwards, as training computes them: ratio 1 exactly, no routing drift."""
    model, batch = model_and_batch
    old, recorded = score_rollout(model, batch, temperature=1.0, micro_batch_size=2, packed=True)
    on_policy = dataclasses.replace(batch, old_logprobs=old, routing=recorded)
    update = PolicyUpdate(model, AlgoConfig(routing_replay="rollout" if recorded is not None else "none"),
                          TrainConfig(micro_batch_tokens=10**6), RolloutConfig(temperature=1.0))
    metrics = update.accumulate(on_policy)
    assert update.packed and metrics["ratio/mean"] == 1.0
    if recorded is not None:
        _, padded_routing = score_rollout(model, batch, temperature=1.0, micro_batch_size=8)
        real = torch.cat([batch.prompt_mask, batch.response_mask], 1).bool()  # (N, P + C)
        assert torch.equal(recorded[real], padded_routing[real]) and not recorded[~real].any()


def test_the_packed_attention_leaves_every_other_forward_as_it_was(tiny_dir):
    model, processor = load_policy(tiny_dir)
    batch = supervised_batch(PromptFormat(processor), RECORDS, TARGETS)
    inputs, P = batch.model_inputs()
    with torch.no_grad():
        before = policy_forward(model, inputs, P).logprobs
        pack(model, batch)  # switches the text decoder's attention to the per-sequence sdpa
        assert model.config.text_config._attn_implementation == SDPA_PER_SEQUENCE
        assert model.config.vision_config._attn_implementation == "sdpa"
        after = policy_forward(model, inputs, P).logprobs
    assert torch.equal(before, after)


def test_auto_packs_only_where_exact_and_on_refuses_clearly(tiny_dir):
    from sapo_vl.config import ModelConfig

    sdpa = load_policy(tiny_dir)[0]
    assert use_packing(sdpa, "auto") and use_packing(sdpa, "on") and not use_packing(sdpa, "off")
    eager = load_policy(tiny_dir, ModelConfig(attn_implementation="eager"))[0]
    assert not use_packing(eager, "auto")
    with pytest.raises(UserError, match="train.packing=on: .*'eager' would attend across sequences"):
        use_packing(eager, "on")
    with pytest.raises(ValueError, match="cannot pack"):
        pack(eager, supervised_batch(PromptFormat(load_policy(tiny_dir)[1]), RECORDS[:1], TARGETS[:1]))
    other = SimpleNamespace(config=SimpleNamespace(model_type="llama"))
    assert not use_packing(other, "auto")
    with pytest.raises(UserError, match="model type 'llama'"):
        use_packing(other, "on")
