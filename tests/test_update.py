"""The policy update: micro-batches by token budget give exactly the gradient of one big batch, on the real model."""

import pytest
import torch
from PIL import Image

from sapo_vl.algos import AGGREGATION_MODES
from sapo_vl.config import AlgoConfig, RolloutConfig, TrainConfig
from sapo_vl.errors import UserError
from sapo_vl.models.load import load_policy
from sapo_vl.models.logprobs import policy_forward
from sapo_vl.models.packing import use_packing
from sapo_vl.models.prefix import forward_inputs
from sapo_vl.rollout import PromptFormat
from sapo_vl.update import PolicyUpdate, token_budget_split
from sapo_vl.warmup import supervised_batch

# ------------------------------------------------------------------------------------------ token_budget_split


def test_token_budget_split_keeps_order_and_respects_the_budget():
    lengths = [5, 3, 8, 2, 2, 7, 1]
    groups = token_budget_split(lengths, budget=16)
    assert [i for g in groups for i in g] == list(range(len(lengths)))
    for g in groups:
        assert len(g) * max(lengths[i] for i in g) <= 16
    assert groups == [[0, 1], [2, 3], [4, 5], [6]]


def test_token_budget_split_puts_an_oversize_sequence_alone():
    assert token_budget_split([3, 50, 3, 3], budget=10) == [[0], [1], [2, 3]]


def test_token_budget_split_large_budget_is_one_group_and_budget_one_is_one_per_sequence():
    assert token_budget_split([4, 9, 2], budget=10**6) == [[0, 1, 2]]
    assert token_budget_split([4, 9, 2], budget=1) == [[0], [1], [2]]


def test_token_budget_split_counts_padding_to_the_longest_sequence():
    # 3 sequences fit by their sum (2 + 2 + 9 = 13 <= 20) but not once padded (3 x 9 = 27 > 20)
    assert token_budget_split([2, 2, 9], budget=20) == [[0, 1], [2]]


def test_token_budget_split_packed_counts_real_tokens_only():
    assert token_budget_split([2, 2, 9], budget=20, packed=True) == [[0, 1, 2]]
    assert token_budget_split([5, 3, 8, 2, 2, 7, 1], budget=10, packed=True) == [[0, 1], [2, 3], [4, 5, 6]]
    assert token_budget_split([3, 50, 3], budget=10, packed=True) == [[0], [1], [2]]


# ------------------------------------------------------------------------------------------ micro-batch invariance


def _image(w, h, color):
    return Image.new("RGB", (w, h), color)


RECORDS = [
    {"id": "a", "prompt": "What color is the shape?", "images": [_image(64, 64, (200, 30, 30))]},
    {"id": "b", "prompt": "Colour?", "images": [_image(96, 48, (30, 200, 30))]},
    {"id": "c", "prompt": "What is the colour of the big shape in this picture? One word.",
     "images": [_image(32, 32, (30, 30, 200))]},
    {"id": "d", "prompt": "Name it.", "images": [_image(128, 64, (90, 90, 20))]},
    {"id": "e", "prompt": "Which colour do you see here?", "images": [_image(48, 96, (10, 120, 200))]},
    {"id": "f", "prompt": "Say the colour.", "images": [_image(64, 32, (220, 220, 20))]},
]
TARGETS = ["red", "the colour is green", "blue", "", "it is a light blue shape with two five", "yellow"]


@pytest.fixture(scope="module")
def model_and_batch(tiny_dir):
    """The tiny policy and a batch with uneven prompt and response lengths, old log-probs off-policy (ratios away
    from 1, so clipping and the SAPO gate are active) and advantages of both signs."""
    model, processor = load_policy(tiny_dir)
    model.train()
    batch = supervised_batch(PromptFormat(processor), RECORDS, TARGETS)
    inputs, P = batch.model_inputs()
    with torch.no_grad():
        logprobs = policy_forward(model, inputs, P).logprobs  # (N, C)
    g = torch.Generator().manual_seed(0)
    N, C = batch.completion_ids.shape
    batch.old_logprobs = logprobs + 0.3 * torch.randn(N, C, generator=g)
    batch.ref_logprobs = logprobs + 0.2 * torch.randn(N, C, generator=g)
    batch.advantages = torch.tensor([1.2, -0.7, 0.4, -1.5, 0.9, -0.3])
    assert len(set(batch.response_mask.sum(1).tolist())) >= 4 and len(set(batch.prompt_mask.sum(1).tolist())) >= 4
    return model, batch


def _grads(model, batch, *, micro_batch_tokens, loss, aggregation, kl_beta=0.0, packing="auto"):
    update = PolicyUpdate(model, AlgoConfig(policy_loss=loss, aggregation=aggregation, kl_beta=kl_beta),
                          TrainConfig(micro_batch_tokens=micro_batch_tokens, logprob_chunk_size=7, packing=packing),
                          RolloutConfig(max_new_tokens=batch.completion_ids.shape[1], temperature=1.0))
    update.policy.zero_grad(set_to_none=True)
    metrics = update.accumulate(batch)
    grads = {n: p.grad.clone() for n, p in update.policy.named_parameters() if p.grad is not None}
    return metrics, grads


CASES = [(loss, mode, 0.0) for loss in ("sapo", "grpo") for mode in AGGREGATION_MODES] + [
    ("sapo", "seq-mean-token-mean", 0.1)]  # + the KL term to a reference policy


@pytest.mark.parametrize("packing", ["on", "off"])
@pytest.mark.parametrize("loss,aggregation,kl_beta", CASES)
def test_micro_batches_accumulate_the_gradient_of_one_big_batch(model_and_batch, loss, aggregation, kl_beta, packing):
    policy, batch = model_and_batch
    kw = dict(loss=loss, aggregation=aggregation, kl_beta=kl_beta, packing=packing)
    full_metrics, full = _grads(policy, batch, micro_batch_tokens=10**6, **kw)
    micro_metrics, micro = _grads(policy, batch, micro_batch_tokens=40, **kw)
    assert full_metrics["micro_batches"] == 1 and micro_metrics["micro_batches"] >= 4
    assert full.keys() == micro.keys() and len(full) > 20
    scale = max(g.abs().max() for g in full.values())
    assert scale > 0
    for name, g in full.items():
        assert torch.allclose(micro[name], g, rtol=1e-4, atol=1e-6 * scale), name
    assert micro_metrics["loss"] == pytest.approx(full_metrics["loss"], rel=1e-5, abs=1e-7)


def test_without_old_logprobs_the_update_is_exactly_the_on_policy_update(model_and_batch):
    """One optimizer step per rollout: pi_old is the policy itself, so skipping its forward changes nothing."""
    import dataclasses

    model, batch = model_and_batch
    inputs, P, packing = forward_inputs(model, batch, use_packing(model, TrainConfig().packing))  # as the update
    with torch.no_grad():
        exact_old = policy_forward(model, inputs, P, packing=packing).logprobs  # the old-log-prob forward's
    with_old = dataclasses.replace(batch, old_logprobs=exact_old)
    without = dataclasses.replace(batch, old_logprobs=None)
    m1, g1 = _grads(model, with_old, micro_batch_tokens=10**6, loss="sapo", aggregation="seq-mean-token-mean")
    m2, g2 = _grads(model, without, micro_batch_tokens=10**6, loss="sapo", aggregation="seq-mean-token-mean")
    assert m1["ratio/mean"] == m2["ratio/mean"] == 1.0 and m1["loss"] == m2["loss"]
    assert all(torch.equal(g1[name], g2[name]) for name in g1)


def test_an_unscored_rollout_scores_all_but_its_first_mini_batch_and_trains_as_if_scored_first(tiny_dir,
                                                                                               model_and_batch,
                                                                                               monkeypatch):
    """Several mini-batches on the policy that made the rollout: the first mini-batch's old log-probs come from its
    own forward, the other rows are scored before the first optimizer step; the update equals scoring every row
    first (the rollout phase's way)."""
    import dataclasses

    from sapo_vl import update as update_module
    from sapo_vl.rollout import score_rollout

    _, batch = model_and_batch
    algo, train = AlgoConfig(), TrainConfig(lr=1e-3, num_mini_batches=3, micro_batch_tokens=10**6)
    rollout_cfg = RolloutConfig(max_new_tokens=batch.completion_ids.shape[1], temperature=1.0)
    params, metrics, scored = [], [], []
    monkeypatch.setattr(update_module, "score_rollout",
                        lambda m, ro, **kw: scored.append(len(ro)) or score_rollout(m, ro, **kw))
    for scored_first in (True, False):
        model, _ = load_policy(tiny_dir)
        model.train()
        update = PolicyUpdate(model, algo, train, rollout_cfg)
        old = None
        if scored_first:
            model.eval()
            old, _ = score_rollout(model, batch, temperature=1.0, micro_batch_size=64, packed=update.packed,
                                   share=update.share)
            model.train()
        scored.clear()
        torch.manual_seed(3)  # the same mini-batches
        metrics.append(update.update(dataclasses.replace(batch, old_logprobs=old)))
        assert scored == ([] if scored_first else [4])  # 6 rows in 3 mini-batches: the last two scored together
        params.append({n: p.detach().clone() for n, p in model.named_parameters()})
    assert metrics[1]["time/logprob"] > 0 == metrics[0]["time/logprob"]
    assert metrics[0]["optimizer_steps"] == metrics[1]["optimizer_steps"] == 3
    moved = max((params[0][n] - p).abs().max() for n, p in load_policy(tiny_dir)[0].named_parameters())
    assert moved > 1e-4  # the three steps changed the weights
    for name, p in params[0].items():
        torch.testing.assert_close(params[1][name], p, rtol=1e-5, atol=1e-6, msg=name)
    # later mini-batches are off-policy by then: their ratios moved away from 1 in both runs alike
    assert metrics[1]["ratio/mean"] == pytest.approx(metrics[0]["ratio/mean"], abs=1e-6)
    assert metrics[0]["ratio/mean"] != 1.0


def test_the_fused_adamw_kernel_steps_the_weights_as_the_per_parameter_loop_does(tiny_dir, model_and_batch,
                                                                                  monkeypatch):
    import sapo_vl.update as update_module

    _, batch = model_and_batch
    weights = []
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(update_module, "fused_adamw", lambda params, device=None: {})
        model, _ = load_policy(tiny_dir)
        model.train()
        update = PolicyUpdate(model, AlgoConfig(), TrainConfig(lr=1e-3, weight_decay=0.1), RolloutConfig())
        assert bool(update.optimizer.defaults.get("fused")) == fused
        for _ in range(3):
            update.step(batch)
        weights.append({n: p.detach().clone() for n, p in model.named_parameters()})
    fresh = dict(load_policy(tiny_dir)[0].named_parameters())
    assert max((weights[0][n] - p).abs().max() for n, p in fresh.items()) > 1e-3  # three steps moved them
    for name, w in weights[1].items():
        torch.testing.assert_close(weights[0][name], w, rtol=1e-5, atol=1e-6, msg=name)


def test_pure_bf16_training_follows_the_fp32_losses(tiny_dir, model_and_batch):
    """model.dtype=bfloat16: weights, gradients and both AdamW moments in bf16 (half the memory of fp32 master
    weights). Over 4 optimizer steps at lr 1e-3 on the same batch its losses stay within 2% (relative) of the fp32
    run's and the gradient norms within 3%: bf16 keeps 8 bits of mantissa, so each forward differs by ~0.4% and
    the difference grows with the steps (measured: 0.3-1.1% on the loss, 0.4-1.7% on the gradient norm)."""
    from sapo_vl.config import ModelConfig

    _, batch = model_and_batch
    runs = {}
    for dtype in ("float32", "bfloat16"):
        model, _ = load_policy(tiny_dir, ModelConfig(dtype=dtype))
        model.train()
        update = PolicyUpdate(model, AlgoConfig(), TrainConfig(lr=1e-3), RolloutConfig())
        runs[dtype] = [update.step(batch) for _ in range(4)]
        state = next(iter(update.optimizer.state.values()))
        assert {state["exp_avg"].dtype, state["exp_avg_sq"].dtype, next(model.parameters()).dtype} == {
            getattr(torch, dtype)}
    for fp32, bf16 in zip(runs["float32"], runs["bfloat16"], strict=True):
        assert bf16["loss"] == pytest.approx(fp32["loss"], rel=0.01)
        assert bf16["grad_norm"] == pytest.approx(fp32["grad_norm"], rel=0.02)
    assert len({round(r["loss"], 4) for r in runs["bfloat16"]}) == 4  # the weights moved: each step's loss differs


@pytest.mark.parametrize("mode", ["sequence_truncate", "sequence_mask"])
def test_rollout_correction_weighs_each_sequences_loss_by_its_truncated_or_masked_sampler_ratio(model_and_batch,
                                                                                                  mode):
    """A sequence-level weight w_i on every token's loss is, for these losses (linear in a positive advantage), the
    update with advantage A_i * w_i: the gradient of the corrected update, over micro-batches too."""
    import dataclasses

    from sapo_vl.algos import rollout_correction_weights

    model, batch = model_and_batch
    shift = torch.tensor([0.9, 0.1, -0.4, 1.2, 0.0, -0.2])[:, None]  # two sequences' mean ratio over 2
    sampler = batch.old_logprobs - shift - 0.1 * torch.randn(batch.old_logprobs.shape,
                                                             generator=torch.Generator().manual_seed(1))
    corrected = dataclasses.replace(batch, sampler_logprobs=sampler)
    weights, _ = rollout_correction_weights(batch.old_logprobs, sampler, batch.response_mask, mode)
    w = weights.max(-1).values  # (N,) one weight per sequence
    assert (w == 2.0).sum() == 2 if mode == "sequence_truncate" else (w == 0).sum() == 2
    scaled = dataclasses.replace(batch, advantages=batch.advantages * w)
    update = PolicyUpdate(model, AlgoConfig(rollout_correction={"mode": mode}), TrainConfig(micro_batch_tokens=40),
                          RolloutConfig(max_new_tokens=batch.completion_ids.shape[1], temperature=1.0))
    update.policy.zero_grad(set_to_none=True)
    metrics = update.accumulate(corrected)
    got = {n: p.grad.clone() for n, p in update.policy.named_parameters() if p.grad is not None}
    _, expected = _grads(model, scaled, micro_batch_tokens=40, loss="sapo", aggregation="seq-mean-token-mean")
    scale = max(g.abs().max() for g in expected.values())
    assert got.keys() == expected.keys() and scale > 0
    for name, g in expected.items():
        torch.testing.assert_close(got[name], g, rtol=1e-5, atol=1e-6 * scale, msg=name)
    assert {"rollout_correction/weight_mean", "rollout_correction/over_threshold_frac",
            "rollout_correction/ratio_q50"} <= metrics.keys()
    with pytest.raises(UserError, match="needs the sampler's log-probs; this rollout has none"):
        update.accumulate(batch)
