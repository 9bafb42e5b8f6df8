"""Three policy updates on one fixed global batch, then a checkpoint round trip, through the same components as
``sapo-vl train`` (``make_accelerator``, ``PolicyUpdate``, ``score_rollout``, ``full_model_state``,
``save_checkpoint``, ``load_trainer_state``). tests/test_fsdp.py runs it twice on the same batch:

    accelerate launch --config_file recipes/accelerate/fsdp2.yaml --num_processes 2 --mixed_precision no \\
        tests/fsdp_driver.py OUT_DIR MODEL_DIR [MODEL_DIR ...]      (each rank trains on its half of the batch)
    run(OUT_DIR, MODEL_DIRS)                                         (one process, the whole batch)

and compares what it writes to OUT_DIR/<model dir name>/: ``result.json`` (losses and gradient norms of the 3 steps,
step 3 again after resuming from the step-2 checkpoint), ``shards-<rank>.json`` (each parameter's global and local
shape) and the checkpoint ``checkpoints/step-000002`` (Hugging Face safetensors + trainer state).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from PIL import Image

COLORS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (90, 90, 20), (10, 120, 200), (220, 220, 20),
          (120, 20, 120), (20, 120, 120)]
TARGETS = ["red", "the colour is green", "blue", "", "it is a light blue shape", "yellow", "purple", "teal two"]
SIZES = [(64, 64), (96, 48), (32, 32), (128, 64), (48, 96), (64, 32), (32, 64), (80, 48)]


def global_batch(processor):
    """8 sequences with images (two prompts repeated), uneven prompt and completion lengths, advantages of both
    signs, and the noise that moves their old log-probs off-policy."""
    from sapo_vl.rollout import PromptFormat
    from sapo_vl.warmup import supervised_batch

    records = [{"id": str(i), "prompt": "What colour is the shape?" + " Say it." * (i % 3),
                "images": [Image.new("RGB", SIZES[i], COLORS[i])]} for i in range(8)]
    batch = supervised_batch(PromptFormat(processor), records, TARGETS)
    # sequences 1 and 5 repeat the prompt (and image) before them, with the next sequence's completion: each rank's
    # share has a repeated prompt, so the shared-prefix forwards are compared too
    batch = batch.select([0, 0, 2, 3, 4, 4, 6, 7])
    for i in (1, 5):
        batch.completion_ids[i], batch.response_mask[i] = batch.completion_ids[i + 1], batch.response_mask[i + 1]
    batch.advantages = torch.tensor([1.2, -0.7, 0.4, -1.5, 0.9, -0.3, 0.6, -0.8])
    noise = 0.3 * torch.randn(batch.completion_ids.shape, generator=torch.Generator().manual_seed(0))  # (8, C)
    return batch, noise


def _old_logprobs(update, batch, noise):
    """Old log-probs as a rollout would have them: from the policy before the updates, moved off-policy by a fixed
    noise (ratios away from 1 that change as the weights do: the loss depends on the weights, SAPO's gate acts)."""
    from sapo_vl.rollout.generate import score_rollout

    logprobs, _ = score_rollout(update.policy, batch, temperature=1.0, micro_batch_size=3)
    return logprobs + noise[:, :logprobs.shape[1]]


def _step(update, batch) -> dict:
    """One update of the rollout ``batch``, metrics reduced over the ranks as train_step does."""
    from sapo_vl.parallel import reduce_mean

    metrics = reduce_mean(update.update(batch), update.accelerator)
    return {"loss": metrics["loss"], "grad_norm": metrics["grad_norm"]}


def _build(path, state=None, algo=None):
    """A policy update as train.setup builds it: its own accelerator (one prepared model each, as in a run)."""
    from sapo_vl.config import AlgoConfig, ModelConfig, RolloutConfig, TrainConfig
    from sapo_vl.models.load import load_policy
    from sapo_vl.parallel import make_accelerator
    from sapo_vl.update import PolicyUpdate

    train = TrainConfig(lr=3e-3, micro_batch_tokens=256, mixed_precision="no")
    accelerator = make_accelerator(train)
    model, processor = load_policy(path, ModelConfig(dtype="float32"))
    update = PolicyUpdate(model, algo or AlgoConfig(), train, RolloutConfig(), accelerator, state)
    # one process takes the sharded ranks' layout (a shared prefix for every micro-batch), not the per-micro-batch
    # choice, so that the runs differ by sharding alone (three Adam steps amplify float32 rounding)
    update.share = "always" if update.share != "off" else "off"
    return update, processor


def drive(model_dir: Path, out: Path) -> None:
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    from sapo_vl.checkpoint import load_trainer_state, rng_state, save_checkpoint, set_rng_state
    from sapo_vl.parallel import full_model_state

    torch.manual_seed(0)
    update, processor = _build(model_dir)
    accelerator = update.accelerator
    rank, world = accelerator.process_index, accelerator.num_processes
    shards = {n: [list(p.shape), list(p.to_local().shape) if isinstance(p, DTensor) else None]
              for n, p in update.policy.named_parameters()}
    (out / f"shards-{rank}.json").write_text(json.dumps(shards))
    batch, noise = global_batch(processor)
    mine = list(range(rank * len(batch) // world, (rank + 1) * len(batch) // world))  # this rank's share
    batch = batch.select(mine)
    batch.old_logprobs = _old_logprobs(update, batch, noise[mine])
    steps = [_step(update, batch) for _ in range(2)]
    weights, state = full_model_state(update.policy), update.state_dict()  # as train._save: every rank gathers
    rng = rng_state()  # this rank's (train._save gathers every rank's into the checkpoint)
    if accelerator.is_main_process:
        save_checkpoint(out, 2, model=update.policy.model, processor=processor, trainer_state=state,
                        state_dict=weights)
    accelerator.wait_for_everyone()
    steps.append(_step(update, batch))
    final = full_model_state(update.policy)

    checkpoint = out / "checkpoints" / "step-000002"
    resumed, _ = _build(checkpoint, load_trainer_state(checkpoint))
    set_rng_state(rng)
    again = _step(resumed, batch)
    resumed_final = full_model_state(resumed.policy)
    if accelerator.is_main_process:
        same = all(torch.equal(final[k], resumed_final[k]) for k in final)
        units = sorted(type(m).__name__ for m in update.policy.modules() if isinstance(m, FSDPModule))
        (out / "result.json").write_text(json.dumps({"steps": steps, "resumed_step3": again, "world": world,
                                                     "resumed_weights_equal": same, "fsdp_units": units,
                                                     "prefix_sharing": update.share}))


def mixed_records(rank: int) -> list[dict]:
    """Rank 0's prompts have images, rank 1's are text only: under FSDP2 only rank 0 has images to encode."""
    if rank == 0:
        return [{"id": f"img{i}", "prompt": "What colour is the shape?", "images": [Image.new("RGB", SIZES[i],
                                                                                       COLORS[i])]}
                for i in range(2)]
    return [{"id": f"txt{i}", "prompt": "What is 2 + 2?" + " Be brief." * i} for i in range(2)]


def drive_mixed(model_dir: Path, out: Path) -> None:
    """Rollout (generation), old log-probs and one update where one rank has images and the other none. Under FSDP2
    every rank must still run the vision tower's collectives as often as the others (a blank image where it has
    none). Rank 1 stops (EOS) after its first token while rank 0 decodes on: both must run as many decoding steps.
    One process runs each rank's share in turn, from the same seed, unsharded. Writes mixed-<rank>.json. Under DDP
    (``--mixed``) the same: there a rank whose vision tower got no gradient left the other waiting."""
    from sapo_vl.parallel import full_model_state
    from sapo_vl.rollout import PromptFormat
    from sapo_vl.rollout.generate import HFEngine, SamplingParams, make_rollout, score_rollout

    update, processor = _build(model_dir)
    acc = update.accelerator
    launched = acc.num_processes > 1  # FSDP2 or DDP
    for rank in [acc.process_index] if launched else [0, 1]:
        engine = HFEngine(update.policy, processor, synced=update.sharded)
        if rank == 1:
            engine.eos_ids = list(range(len(processor.tokenizer)))  # any token ends a completion
        torch.manual_seed(10 + rank)
        ro = make_rollout(engine, PromptFormat(processor), mixed_records(rank), 2, SamplingParams(4, 1.0))
        ro.old_logprobs, _ = score_rollout(update.policy, ro, temperature=1.0, micro_batch_size=3)
        mask = ro.response_mask.bool()
        result = {"tokens": [ro.completion_ids[i][mask[i]].tolist() for i in range(len(ro))],
                  "old_logprobs": [ro.old_logprobs[i][mask[i]].tolist() for i in range(len(ro))]}
        if launched:  # one optimizer step on each rank's share (images on one rank only), vision trainable
            ro.advantages = torch.tensor([1.0, -1.0, 0.5, -0.5])
            before = {n: p.clone() for n, p in full_model_state(update.policy).items() if "visual" in n}
            metrics = update.update(ro)
            after = full_model_state(update.policy)
            result.update(loss=metrics["loss"], grad_norm=metrics["grad_norm"],
                          vision_moved=sum(not torch.equal(before[n], after[n]) for n in before),
                          vision_tensors=len(before))
        if launched:
            result["stopped"], result["saved_after_stop"] = _stop_one_rank(update, processor, rank)
            if update.sharded:
                result["all_gathers"] = _count_all_gathers(update, processor, rank)
                result["replay_drift"] = _replay_with_one_rank_padded(model_dir, rank)
        (out / f"mixed-{rank}.json").write_text(json.dumps(result))


def _replay_with_one_rank_padded(model_dir: Path, rank: int) -> float:
    """Routing replay with shared-prefix forwards under FSDP2: rank 1's recorded prompt experts differ within a group
    (it cannot replay them shared, so it must run padded), rank 0's do not; both ranks must then run the padded
    forward (the same forward calls). Returns the update's routing drift (0 under replay)."""
    from sapo_vl.config import AlgoConfig
    from sapo_vl.rollout import PromptFormat
    from sapo_vl.rollout.generate import HFEngine, SamplingParams, make_rollout, score_rollout

    update, processor = _build(model_dir, algo=AlgoConfig(routing_replay="rollout"))
    assert update.share == "always"  # replay does not turn shared prompts off
    torch.manual_seed(30 + rank)
    ro = make_rollout(HFEngine(update.policy, processor, synced=True), PromptFormat(processor),
                      mixed_records(rank), 2, SamplingParams(4, 1.0))
    ro.old_logprobs, ro.routing = score_rollout(update.policy, ro, temperature=1.0, micro_batch_size=4)
    if rank == 1:
        ro.routing[1, ro.prompt_len - 1] = (ro.routing[1, ro.prompt_len - 1] + 1) % 8
    ro.advantages = torch.tensor([1.0, -1.0, 0.5, -0.5])
    return update.update(ro)["moe/routing_drift"]


def _count_all_gathers(update, processor, rank: int) -> dict:
    """All-gathers of one sharded rollout (4 new tokens) with every decoder layer kept gathered for it (what runs
    when they fit), with the first only, and with none (every layer gathered at every decoding step), and whether all
    three drew the same tokens from the same seed."""
    from torch.distributed.fsdp._fully_shard import _fsdp_param_group

    import sapo_vl.rollout.generate as generate
    from sapo_vl.rollout import PromptFormat

    real_gather, real_kept = _fsdp_param_group.foreach_all_gather, generate.kept_units
    choices = {"all": real_kept, "first": lambda policy: real_kept(policy)[:1], "none": lambda policy: []}
    counts, tokens = {}, []
    for name, kept in choices.items():
        calls = []

        def counting(*args, calls=calls, **kwargs):
            calls.append(1)
            return real_gather(*args, **kwargs)

        _fsdp_param_group.foreach_all_gather, generate.kept_units = counting, kept
        try:
            engine = generate.HFEngine(update.policy, processor, synced=True)
            engine.eos_ids = [-1]  # no early stop: the decoder runs after tokens 1-3 on both ranks
            torch.manual_seed(20 + rank)
            ro = generate.make_rollout(engine, PromptFormat(processor), mixed_records(rank), 2,
                                       generate.SamplingParams(4, 1.0))
        finally:
            _fsdp_param_group.foreach_all_gather, generate.kept_units = real_gather, real_kept
        counts[name] = len(calls)
        tokens.append(ro.completion_ids.tolist())
    return dict(counts, kept=len(real_kept(update.policy)), same_tokens=all(t == tokens[0] for t in tokens))


def _stop_one_rank(update, processor, rank: int) -> tuple[bool, bool]:
    """Rank 1 is asked to stop (a SIGTERM) at its second decoding step: under FSDP2 both ranks stop there (none
    waits in a collective for the other), and the weights can still be gathered for the checkpoint a stop writes."""
    from sapo_vl.errors import Interrupted
    from sapo_vl.parallel import full_model_state
    from sapo_vl.rollout import PromptFormat
    from sapo_vl.rollout.generate import HFEngine, SamplingParams, make_rollout

    asked = []

    def stop() -> bool:
        asked.append(1)
        return rank == 1 and len(asked) >= 2

    engine = HFEngine(update.policy, processor, synced=update.sharded, stop=stop)
    try:
        make_rollout(engine, PromptFormat(processor), mixed_records(rank), 2, SamplingParams(6, 1.0))
        stopped = False
    except Interrupted:
        stopped = True
    state = full_model_state(update.policy)  # collective
    return stopped, rank != 0 or len(state) > 0


def run(out_dir, model_dirs) -> None:
    from accelerate.state import AcceleratorState
    from accelerate.utils import FullyShardedDataParallelPlugin

    for model_dir in map(Path, model_dirs):
        if AcceleratorState._shared_state.get("fsdp_plugin") is not None:  # it keeps the last model's wrap classes
            AcceleratorState._shared_state["fsdp_plugin"] = FullyShardedDataParallelPlugin()  # (a run has one model)
        out = Path(out_dir) / model_dir.name
        out.mkdir(parents=True, exist_ok=True)
        drive(model_dir, out)
        if model_dir == Path(model_dirs[0]):
            drive_mixed(model_dir, out)


if __name__ == "__main__":
    torch.set_num_threads(1)
    if sys.argv[1] == "--mixed":  # fsdp_driver.py --mixed OUT_DIR MODEL_DIR: drive_mixed alone
        drive_mixed(Path(sys.argv[3]), Path(sys.argv[2]))
    else:
        run(sys.argv[1], sys.argv[2:])
    if torch.distributed.is_initialized():  # as sapo_vl.parallel.leave_process_group: not left to the exit
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
