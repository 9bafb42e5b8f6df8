"""Routing replay on the Hugging Face path: the training forwards use the experts the rollout forward chose, the router
still learns, the first mini-batch stays exactly on-policy; and the off-policy stress knob (rollout.staleness)."""

import pytest
import torch

from sapo_vl.config import AlgoConfig, RolloutConfig, TrainConfig
from sapo_vl.data import build_synthetic_shapes
from sapo_vl.errors import UserError
from sapo_vl.models.load import load_policy
from sapo_vl.models.logprobs import policy_forward
from sapo_vl.models.moe import moe_routers, routing
from sapo_vl.rollout import HFEngine, PromptFormat, SamplingParams, make_rollout, score_rollout
from sapo_vl.update import PolicyUpdate


def _rollout(model, processor, n_prompts=4, group=4, seed=0):
    torch.manual_seed(seed)
    engine = HFEngine(model, processor)
    records = build_synthetic_shapes("train", n=n_prompts)
    ro = make_rollout(engine, PromptFormat(processor), records, group, SamplingParams(max_new_tokens=4))
    ro.old_logprobs, ro.routing = score_rollout(model, ro, temperature=1.0, micro_batch_size=8)
    ro.advantages = torch.randn(len(ro), generator=torch.Generator().manual_seed(seed))
    return ro


@pytest.fixture
def policy(tiny_dir):
    model, processor = load_policy(tiny_dir)
    model.train()
    return model, processor


def _update(model, replay: str, lr=0.05, mini_batches=4, micro_tokens=10**6):
    return PolicyUpdate(model, AlgoConfig(routing_replay=replay), TrainConfig(lr=lr, num_mini_batches=mini_batches,
                        epochs=2, micro_batch_tokens=micro_tokens, max_grad_norm=100.0), RolloutConfig(temperature=1.0))


def test_replay_keeps_routing_drift_at_zero_on_every_mini_batch_and_epoch(policy):
    model, processor = policy
    ro = _rollout(model, processor)
    update = _update(model, "rollout", micro_tokens=60)  # several micro-batches: slicing of the recorded ids
    steps = [update.step(ro.select(list(range(k, len(ro), 4)))) for _ in range(2) for k in range(4)]
    assert [m["moe/routing_drift"] for m in steps] == [0.0] * 8
    assert [m["moe/routing_drift_any_layer"] for m in steps] == [0.0] * 8
    assert max(m["moe/router_drift"] for m in steps) > 0  # the router itself did move: replay hid it
    assert steps[0]["micro_batches"] > 1


def test_without_replay_the_same_updates_drift(policy):
    model, processor = policy
    ro = _rollout(model, processor)
    update = _update(model, "none")
    steps = [update.step(ro.select(list(range(k, len(ro), 4)))) for _ in range(2) for k in range(4)]
    assert steps[0]["moe/routing_drift"] == 0.0 and max(m["moe/routing_drift"] for m in steps) > 0
    assert "moe/router_drift" not in steps[0]


def test_the_first_mini_batch_under_replay_is_exactly_on_policy_and_the_router_gets_gradients(policy):
    model, processor = policy
    ro = _rollout(model, processor)
    inputs, P = ro.model_inputs()
    with routing(model, ro.replay_routing()):
        out = policy_forward(model, inputs, P, temperature=1.0)
    mask = ro.response_mask.bool()
    assert torch.equal(out.logprobs.detach()[mask], ro.old_logprobs[:, :out.logprobs.shape[1]][mask])
    update = _update(model, "rollout", mini_batches=1)
    metrics = update.accumulate(ro)
    assert metrics["ratio/mean"] == 1.0
    grads = [r.weight.grad for r in moe_routers(model)]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_replay_forces_the_recorded_experts_even_when_the_router_would_choose_others(policy):
    model, processor = policy
    ro = _rollout(model, processor, n_prompts=2, group=2)
    replay = ro.replay_routing()
    forced = [torch.roll(ids, 1, dims=-1) % 8 if i % 2 else (ids + 1) % 8 for i, ids in enumerate(replay)]
    inputs, P = ro.model_inputs()
    with torch.no_grad(), routing(model, forced) as used:
        policy_forward(model, inputs, P)
    assert all(torch.equal(u.cpu(), f) for u, f in zip(used, forced))


def test_a_router_of_another_shape_is_a_clear_error(policy):
    model, processor = policy
    ro = _rollout(model, processor, n_prompts=1, group=2)
    router = moe_routers(model)[0]
    handle = router.register_forward_hook(lambda module, args, output: output[0])  # a different router contract
    inputs, P = ro.model_inputs()
    try:
        with pytest.raises(UserError, match="not the \\(logits, weights, expert ids\\) of transformers 5"):
            with torch.no_grad(), routing(model, ro.replay_routing()):
                policy_forward(model, inputs, P)
    finally:
        handle.remove()


def test_a_dense_model_has_no_routers_and_replay_is_refused_at_setup(tmp_path, capsys):
    from pathlib import Path

    from sapo_vl.cli import main
    from sapo_vl.models.tiny import TinyConfig, make_tiny_model

    dense = make_tiny_model(tmp_path / "dense", TinyConfig(moe=False))
    assert moe_routers(load_policy(dense)[0]) == []
    demo = Path(__file__).resolve().parents[2] / "recipes" / "tiny" / "demo.yaml"
    code = main(["train", str(demo), f"output_dir={tmp_path / 'run'}", f"model.path={dense}", "warmup.steps=0",
                 "algo.routing_replay=rollout", "data.kwargs={n: 8}", "log.progress=false"])
    assert code == 2 and "needs an MoE model" in capsys.readouterr().err


def _replayed(model, ro, layout, replay):
    """Log-probs, experts used (padded layout) and gradients of one forward + backward under ``replay``."""
    from sapo_vl.models.prefix import SharedPrefix

    model.zero_grad(set_to_none=True)
    inputs, P = ro.model_inputs()
    with routing(model, replay) as used:  # the hooks stay for a checkpointed backward's recompute
        out = policy_forward(model, inputs, P, packing=layout)
        used = list(used)
        (out.logprobs * ro.response_mask[:, :out.logprobs.shape[1]]).sum().backward()
    if isinstance(layout, SharedPrefix):
        used = [layout.to_padded(u) for u in used]
    return out.logprobs.detach(), used, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "gradient-checkpointing"])
def test_replay_through_shared_prefix_forwards_equals_replay_through_the_padded_forward(tiny_dir, checkpointing):
    """Each prompt runs once with its recorded experts and each completion with its own: the padded forward's
    log-probs, experts and gradients, under gradient checkpointing too (a recompute replays by the same counts)."""
    from sapo_vl.config import ModelConfig
    from sapo_vl.models.prefix import share_prefix

    model, processor = load_policy(tiny_dir, ModelConfig(gradient_checkpointing=checkpointing))
    model.train()
    ro = _rollout(model, processor)
    # move the router so that its own choice differs from the recorded one: replay must be what decides
    with torch.no_grad():
        for r in moe_routers(model):
            r.weight.add_(torch.randn_like(r.weight) * 0.5)
    layout = share_prefix(ro, ro.model_inputs()[0]["attention_mask"])
    shared_replay = layout.replay(ro.replay_routing())
    assert shared_replay is not None and len(shared_replay[0]) == 2  # the prompt call and the completion call
    padded = _replayed(model, ro, None, ro.replay_routing())
    shared = _replayed(model, ro, layout, shared_replay)
    mask = ro.response_mask.bool()
    torch.testing.assert_close(shared[0][mask], padded[0][mask], rtol=0, atol=2e-6)
    real = ro.model_inputs()[0]["attention_mask"].reshape(-1).bool()
    for a, b in zip(shared[1], padded[1], strict=True):
        assert torch.equal(a[real], b[real])
    scale = max(g.abs().max() for g in padded[2].values())
    assert padded[2].keys() == shared[2].keys()
    for name, g in padded[2].items():
        torch.testing.assert_close(shared[2][name], g, rtol=1e-4, atol=1e-6 * scale, msg=name)


def test_the_update_replays_through_shared_prompts_unless_a_group_was_recorded_with_different_ones(policy,
                                                                                                  monkeypatch):
    """The update shares each prompt under replay (exactly on-policy at the first step); where two sequences of one
    prompt were recorded with different prompt experts, the shared layout cannot replay both, so that micro-batch
    runs padded, each sequence with its own experts (drift stays 0)."""
    from sapo_vl.models.prefix import SharedPrefix

    model, processor = policy
    ro = _rollout(model, processor)
    real, layouts = SharedPrefix.replay, []
    monkeypatch.setattr(SharedPrefix, "replay", lambda self, recorded: layouts.append(real(self, recorded))
                        or layouts[-1])
    update = _update(model, "rollout", mini_batches=1)
    assert update.share == "auto"
    metrics = update.accumulate(ro)
    assert len(layouts) == 1 and layouts[0] is not None  # shared: one replay per forward call
    assert metrics["ratio/mean"] == 1.0 and metrics["moe/routing_drift"] == 0.0
    ro.routing[1, ro.prompt_len - 1] = (ro.routing[1, ro.prompt_len - 1] + 1) % 8  # sequence 1's last prompt token
    metrics = update.accumulate(ro)
    assert len(layouts) == 2 and layouts[1] is None  # padded
    assert metrics["moe/routing_drift"] == 0.0


def test_a_replay_without_ids_for_a_calls_token_count_is_a_clear_error(policy):
    model, processor = policy
    ro = _rollout(model, processor, n_prompts=1, group=2)
    inputs, P = ro.model_inputs()
    replay = [{7: ids} for ids in ro.replay_routing()]
    with pytest.raises(ValueError, match=r"recorded ids for calls of \[7\] tokens"), routing(model, replay):
        policy_forward(model, inputs, P)


def _moe_block(family: str, tiny_dir, norm_topk_prob: bool = True):
    """One MoE block in float64: the tiny Qwen3-VL-MoE's first, or a Qwen3-MoE block with random weights."""
    if family == "qwen3_vl_moe":
        from sapo_vl.config import ModelConfig

        model = load_policy(tiny_dir, ModelConfig(experts_implementation="eager"))[0]  # grouped_mm has no float64
        block = next(m for m in model.modules() if type(m).__name__.endswith("SparseMoeBlock"))
    else:
        from transformers import Qwen3MoeConfig
        from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock

        cfg = Qwen3MoeConfig(hidden_size=16, moe_intermediate_size=8, num_experts=8, num_experts_per_tok=2,
                             norm_topk_prob=norm_topk_prob, experts_implementation="eager")
        block = Qwen3MoeSparseMoeBlock(cfg)
        with torch.no_grad():
            for p in block.parameters():
                p.copy_(torch.randn_like(p) * 0.5)
    return block.double()


def _by_hand(block, x, experts, renormalise: bool):
    """sum_j w_j * expert_{e_j}(x), with w the softmax of the live router's logits at the recorded experts e,
    renormalised over them when the family's router renormalises its top-k."""
    probs = torch.softmax(x @ block.gate.weight.T, dim=-1)  # (N, E)
    w = probs.gather(-1, experts)
    w = w / w.sum(-1, keepdim=True) if renormalise else w
    gate_up, down, act = block.experts.gate_up_proj, block.experts.down_proj, block.experts.act_fn
    out = torch.zeros_like(x)
    for j in range(experts.shape[1]):
        g, u = torch.einsum("nfh,nh->nf", gate_up[experts[:, j]], x).chunk(2, dim=-1)
        out = out + w[:, j, None] * torch.einsum("nhf,nf->nh", down[experts[:, j]], act(g) * u)
    return out


@pytest.mark.parametrize("family,norm", [("qwen3_vl_moe", True), ("qwen3_moe", True), ("qwen3_moe", False)],
                         ids=["qwen3-vl-moe", "qwen3-moe-norm-topk", "qwen3-moe-raw-topk"])
def test_under_replay_the_moe_block_output_is_the_recorded_experts_weighted_by_the_live_router(tiny_dir, family,
                                                                                                 norm):
    """Proof by output, not bookkeeping: the block's output (and the router's gradient) equal a computation by hand
    from the recorded experts, which differ from the router's own choice, and the live router's probabilities at
    them, renormalised exactly when the family's router renormalises (Qwen3-MoE: ``norm_topk_prob``)."""
    torch.manual_seed(0)
    block = _moe_block(family, tiny_dir, norm)
    k, E = block.gate.top_k, block.gate.weight.shape[0]
    x = torch.randn(12, block.gate.weight.shape[1], dtype=torch.float64)
    own = torch.topk(x @ block.gate.weight.T, k, dim=-1).indices
    recorded = torch.topk(-(x @ block.gate.weight.T), k, dim=-1).indices  # the router's least likely experts
    assert not (own[:, :, None] == recorded[:, None, :]).any() and E > 2 * k - 1
    with routing(block, [recorded]) as used:
        out = block(x[None])[0]
    assert torch.equal(used[0], recorded)
    expected = _by_hand(block, x, recorded, renormalise=norm)
    scale = expected.abs().max().item()  # the router's softmax runs in float32: agreement to ~1e-7 of the output
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6 * scale)
    (out.sum()).backward()
    router_grad = block.gate.weight.grad.clone()
    block.zero_grad()
    expected.sum().backward()
    torch.testing.assert_close(router_grad, block.gate.weight.grad, rtol=0, atol=1e-6 * router_grad.abs().max())


def test_replay_under_which_no_router_hook_fired_is_a_clear_error(policy, tmp_path):
    import copy

    from sapo_vl.models.tiny import TinyConfig, make_tiny_model

    model, processor = policy
    ro = _rollout(model, processor, n_prompts=1, group=2)
    inputs, P = ro.model_inputs()
    unhooked = copy.deepcopy(model)  # the forward runs on a copy: the hooked routers never see it
    with pytest.raises(UserError, match=r"routing replay: no router hook fired in the forward \(MoE layers \[0, 1"):
        with torch.no_grad(), routing(model, ro.replay_routing()):
            policy_forward(unhooked, inputs, P)
    dense = load_policy(make_tiny_model(tmp_path / "dense", TinyConfig(moe=False)))[0]
    with pytest.raises(UserError, match=r"no router hook fired in the forward \(MoE layers none found\)"):
        with torch.no_grad(), routing(dense, []):
            policy_forward(dense, inputs, P)
