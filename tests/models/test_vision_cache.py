"""Each image encoded once per step: the log-probs and gradients of encoding every copy, far fewer vision passes."""

import pytest
import torch
from PIL import Image

from sapo_vl.config import AlgoConfig, ModelConfig, RolloutConfig, TrainConfig
from sapo_vl.models.load import load_policy
from sapo_vl.models.logprobs import policy_forward
from sapo_vl.rollout import HFEngine, PromptFormat, SamplingParams, collate_prompts, make_rollout, score_rollout
from sapo_vl.models.vision import full_pixel_values
from sapo_vl.update import PolicyUpdate

RECORDS = [
    {"id": "a", "prompt": "Colour?", "images": [Image.new("RGB", (64, 32), (200, 30, 30))]},
    {"id": "b", "prompt": "<image> or <image>?", "images": [Image.new("RGB", (32, 32), (30, 200, 30)),
                                                         Image.new("RGB", (48, 32), (30, 30, 200))]},
    {"id": "c", "prompt": "No picture here."},
]
G = 3


def _count(model):
    calls = {"images": 0}

    def hook(module, args, kwargs):
        calls["images"] += len(kwargs["grid_thw"]) if "grid_thw" in kwargs else len(args[1])

    return calls, model.model.visual.register_forward_pre_hook(hook, with_kwargs=True)


def _every_copy(inputs: dict) -> dict:
    """Hugging Face inputs: each copy's pixel rows, no image keys (the model encodes every copy)."""
    inputs = dict(inputs)
    keys = inputs.pop("image_keys")
    return {**inputs, "pixel_values": full_pixel_values(inputs["pixel_values"], inputs["image_grid_thw"], keys)}


@pytest.fixture
def rollout(tiny_dir):
    model, processor = load_policy(tiny_dir)
    calls, handle = _count(model)
    torch.manual_seed(0)
    ro = make_rollout(HFEngine(model, processor), PromptFormat(processor), RECORDS, G, SamplingParams(4))
    ro.old_logprobs, ro.routing = score_rollout(model, ro, temperature=1.0, micro_batch_size=64)
    handle.remove()
    ro.advantages = torch.tensor([1.0, -0.5, 0.3] * G)
    return model, processor, ro, calls["images"]


def test_a_rollout_encodes_each_distinct_image_once_for_generation_and_old_logprobs(rollout):
    *_, images = rollout
    assert images == 3  # 3 distinct images (not 3 x G copies; the old log-probs reuse them)


def test_logprobs_from_the_cache_equal_encoding_every_copy(rollout):
    model, _, ro, _ = rollout
    inputs, P = ro.model_inputs()
    per_copy = _every_copy(inputs)  # the model encodes each copy itself
    with torch.no_grad():
        cached = policy_forward(model, inputs, P, vision=ro.vision).logprobs
        deduped = policy_forward(model, inputs, P).logprobs
        every = policy_forward(model, per_copy, P).logprobs
    mask = ro.response_mask[:, :every.shape[1]].bool()
    torch.testing.assert_close(cached[mask], every[mask], rtol=0, atol=2e-6)
    torch.testing.assert_close(deduped[mask], every[mask], rtol=0, atol=2e-6)


def test_gradients_through_a_trainable_vision_tower_equal_encoding_every_copy(rollout):
    model, _, ro, _ = rollout
    model.train()
    inputs, P = ro.model_inputs()
    grads = []
    for batch in (inputs, _every_copy(inputs)):
        model.zero_grad(set_to_none=True)
        out = policy_forward(model, batch, P)
        (out.logprobs * ro.response_mask[:, :out.logprobs.shape[1]]).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    vision = [n for n in grads[1] if ".visual." in n]
    assert vision and grads[0].keys() == grads[1].keys()
    for name, g in grads[1].items():
        torch.testing.assert_close(grads[0][name], g, rtol=1e-4, atol=1e-6, msg=name)


def test_a_frozen_vision_tower_is_not_run_by_the_updates_at_all(tiny_dir):
    model, processor = load_policy(tiny_dir, ModelConfig(freeze_vision=True))
    torch.manual_seed(0)
    ro = make_rollout(HFEngine(model, processor), PromptFormat(processor), RECORDS, G, SamplingParams(4))
    ro.old_logprobs, ro.routing = score_rollout(model, ro, temperature=1.0, micro_batch_size=64)
    ro.advantages = torch.tensor([1.0, -0.5, 0.3] * G)
    update = PolicyUpdate(model, AlgoConfig(), TrainConfig(num_mini_batches=2, epochs=2, micro_batch_tokens=64),
                          RolloutConfig())
    calls, handle = _count(model)
    metrics = update.update(ro)
    handle.remove()
    assert calls["images"] == 0 and metrics["optimizer_steps"] == 4.0 and metrics["micro_batches"] > 1


def test_sampled_and_greedy_generation_match_generating_from_every_copy(rollout):
    model, processor, _, _ = rollout
    fmt = PromptFormat(processor)
    unique = collate_prompts(fmt, RECORDS)
    copies = unique.repeat(G)
    engine = HFEngine(model, processor)
    greedy = SamplingParams(4, temperature=0.0)
    with torch.no_grad():
        ours = engine.generate(unique, greedy, n=G)
        theirs = model.generate(**copies.model_inputs(), do_sample=False, max_new_tokens=4,
                                suppress_tokens=engine.suppress, eos_token_id=engine.eos_ids,
                                pad_token_id=engine.pad_id)[:, copies.input_ids.shape[1]:]
    assert torch.equal(ours[:, :theirs.shape[1]], theirs)
    assert unique.image_keys == [0, 1, 2] and copies.image_keys == [0] * G + [1, 2] * G  # prompt by prompt


def test_a_training_step_through_the_policy_module_encodes_each_distinct_image_once(tiny_dir):
    """As ``sapo-vl train`` wires it: the engine and the old log-probs go through the update's ``PolicyModule``,
    whose forward hands the cache on; the frozen-vision updates then read it."""
    model, processor = load_policy(tiny_dir, ModelConfig(freeze_vision=True))
    update = PolicyUpdate(model, AlgoConfig(), TrainConfig(num_mini_batches=2, micro_batch_tokens=64),
                          RolloutConfig())
    calls, handle = _count(model)
    torch.manual_seed(0)
    ro = make_rollout(HFEngine(update.policy, processor), PromptFormat(processor), RECORDS, G, SamplingParams(4))
    ro.old_logprobs, ro.routing = score_rollout(update.policy, ro, temperature=1.0, micro_batch_size=64)
    ro.advantages = torch.tensor([1.0, -0.5, 0.3] * G)
    update.update(ro)
    handle.remove()
    assert calls["images"] == 3 and len(ro.vision) == 3


@pytest.mark.parametrize("case", ["text-only", "every image cached"])
def test_a_distributed_forward_without_an_image_to_encode_runs_the_tower_on_one_blank_image(rollout, case):
    """Under FSDP2 every rank must run the vision tower's all-gathers as often as the others (and under DDP reduce
    its gradients), so a forward with no image to encode (text-only prompts, or all in the step's cache) encodes one
    blank image instead, its zero in the loss so the tower's backward runs too; the log-probs are those of the
    single-process forward."""
    from sapo_vl.models.logprobs import PolicyModule

    model, _, ro, _ = rollout
    rows = [i for i, r in enumerate(ro.records) if (r["id"] == "c") == (case == "text-only")]
    micro = ro.select(rows)
    inputs, P = micro.model_inputs()
    runs = {}
    for distributed in (False, True):
        model.zero_grad(set_to_none=True)
        grids: list = []

        def record(module, args, kwargs, grids=grids):
            grids.append((kwargs["grid_thw"] if "grid_thw" in kwargs else args[1]).tolist())

        handle = model.model.visual.register_forward_pre_hook(record, with_kwargs=True)
        out = PolicyModule(model, distributed)(inputs, P, vision=ro.vision)
        handle.remove()
        out.logprobs.sum().backward()
        tower = [p.grad for n, p in model.named_parameters() if ".visual." in n]
        runs[distributed] = out.logprobs.detach(), grids, tower
    (plain, grids, plain_grads), (blank, blank_grids, blank_grads) = runs[False], runs[True]
    merge = model.config.vision_config.spatial_merge_size
    assert grids == [] and blank_grids == [[[1, merge, merge]]]  # one blank image of one merged token
    assert torch.equal(blank, plain)
    assert all(g is None for g in plain_grads)
    assert all(g is not None and not g.any() for g in blank_grads)  # the tower's backward ran, adding nothing
