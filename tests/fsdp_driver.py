"""Three policy updates on one fixed global batch, then a checkpoint round trip, through the same components as
``sapo-vl train`` (``make_accelerator``, ``build_update``: sharded loading, ``score_rollout``, ``save_checkpoint``,
``load_trainer_state``). tests/test_fsdp.py runs it twice on the same batch:

    accelerate launch --config_file recipes/accelerate/fsdp2.yaml --num_processes 2 --mixed_precision no \\
        tests/fsdp_driver.py OUT_DIR MODEL_DIR [MODEL_DIR ...]      (each rank trains on its half of the batch)
    run(OUT_DIR, MODEL_DIRS)                                         (one process, the whole batch)

and compares what it writes to OUT_DIR/<model dir name>/: ``result.json`` (losses and gradient norms of the 3 steps,
step 3 again after resuming from the step-2 checkpoint, and after resuming from the other launch's: 1 -> 2 with
``--other``, 2 -> 1 by ``cross``), ``shards-<rank>.json`` (each parameter's global and local shape) and the
checkpoint ``checkpoints/step-000002`` (each rank's shards).
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


def _build(path, resume=None, algo=None, model=None):
    """A policy update as train.setup builds it (``build_update``: sharded loading under FSDP2), with its own
    accelerator (one prepared model each, as in a run). ``resume``: (checkpoint, trainer state)."""
    from sapo_vl.config import AlgoConfig, ModelConfig, RolloutConfig, TrainConfig
    from sapo_vl.models.load import load_processor
    from sapo_vl.parallel import make_accelerator
    from sapo_vl.policy_state import build_update

    train = TrainConfig(lr=3e-3, micro_batch_tokens=256, mixed_precision="no")
    accelerator = make_accelerator(train)
    update = build_update(Path(path), model or ModelConfig(dtype="float32"), algo or AlgoConfig(), train,
                          RolloutConfig(), accelerator, resume)
    # shared-prefix forwards for every micro-batch on both sides (the trainer turns them off under FSDP2, for memory:
    # sapo_vl.models.prefix.use_shared_prefix), so that the runs differ by sharding alone and the sharded shared-prefix
    # path stays correct (three Adam steps amplify float32 rounding)
    update.share = "always"
    return update, load_processor(path)


def full_model_state(policy) -> dict:
    """The Hugging Face model's whole state dict on the main process (gathered from the shards under FSDP2;
    collective: every rank calls it, the others get an empty dict), tied weights once."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.tensor import DTensor

    policy = getattr(policy, "module", policy)
    sharded = any(isinstance(p, DTensor) for p in policy.parameters())
    state = get_model_state_dict(policy, options=StateDictOptions(full_state_dict=True, cpu_offload=sharded))
    tied = {n for n, _ in policy.named_parameters(remove_duplicate=False)} - {n for n, _ in policy.named_parameters()}
    return {k.removeprefix("model."): v for k, v in state.items() if k not in tied}


class HeldUnsharded:
    """``with HeldUnsharded() as held:``: the most parameters FSDP2 held unsharded (gathered, or being all-gathered)
    at once on this rank inside the block (``held.peak``); sizes of the wrap units by ``unit_sizes``."""

    def __enter__(self):
        from torch.distributed.fsdp._fully_shard._fsdp_param_group import FSDPParamGroup

        self.cls, self.saved, self.peak, held = FSDPParamGroup, (FSDPParamGroup.unshard, FSDPParamGroup.reshard), 0, {}

        def watch(fn):
            def wrapped(group, *args, **kwargs):
                out = fn(group, *args, **kwargs)
                if group._all_gather_result is not None or group.is_unsharded:
                    held[id(group)] = sum(p._orig_size.numel() for p in group.fsdp_params)
                else:
                    held.pop(id(group), None)
                self.peak = max(self.peak, sum(held.values()))
                return out
            return wrapped

        FSDPParamGroup.unshard, FSDPParamGroup.reshard = watch(self.saved[0]), watch(self.saved[1])
        return self

    def __exit__(self, *exc):
        self.cls.unshard, self.cls.reshard = self.saved


def unit_sizes(policy) -> dict:
    """Parameters of the root unit, of the largest other wrap unit, and of the whole model."""
    from torch.distributed.fsdp import FSDPModule

    sizes = {}
    for m in policy.modules():
        if isinstance(m, FSDPModule):
            group = m._get_fsdp_state()._fsdp_param_group
            sizes[m is policy] = sizes.get(m is policy, []) + [
                sum(p._orig_size.numel() for p in group.fsdp_params) if group else 0]
    return {"root": sizes[True][0], "largest": max(sizes[False]), "total": sum(sizes[True] + sizes[False])}


def _save(update, processor, out: Path, step: int) -> Path:
    from sapo_vl.checkpoint import save_checkpoint

    return save_checkpoint(out, step, policy=update.policy, optimizer=update.optimizer, processor=processor,
                           trainer_state=update.state_dict())


def resumed_step(checkpoint: Path, batch, rng=None, held: dict | None = None) -> tuple[dict, dict]:
    """Step 3 of this process's share of ``batch`` after resuming from ``checkpoint`` (written by any number of
    processes): its loss and gradient norm, and the weights after it (main process). ``held["resume"]``: the most
    parameters held unsharded while resuming."""
    from sapo_vl.checkpoint import load_trainer_state, set_rng_state

    with HeldUnsharded() as h:
        resumed, _ = _build(checkpoint, (checkpoint, load_trainer_state(checkpoint)))
    if held is not None:
        held["resume"] = h.peak
    if rng is not None:
        set_rng_state(rng)
    again = _step(resumed, batch)
    return again, full_model_state(resumed.policy)


def drive(model_dir: Path, out: Path, other: Path | None = None) -> None:
    """Three updates with a checkpoint after the second, step 3 again after resuming from it; with ``other`` (the
    same step-2 checkpoint written by another number of processes) step 3 after resuming from that one too."""
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    from sapo_vl.checkpoint import rng_state

    torch.manual_seed(0)
    held = {}  # per phase, the most parameters held unsharded at once (FSDP2)
    with HeldUnsharded() as h:
        update, processor = _build(model_dir)
    held["load"] = h.peak
    accelerator = update.accelerator
    rank, world = accelerator.process_index, accelerator.num_processes
    shards = {n: [list(p.shape), list(p.to_local().shape) if isinstance(p, DTensor) else None]
              for n, p in update.policy.named_parameters()}
    (out / f"shards-{rank}.json").write_text(json.dumps(shards))
    batch, noise = global_batch(processor)
    mine = list(range(rank * len(batch) // world, (rank + 1) * len(batch) // world))  # this rank's share
    batch = batch.select(mine)
    batch.old_logprobs = _old_logprobs(update, batch, noise[mine])
    with HeldUnsharded() as h:
        steps = [_step(update, batch) for _ in range(2)]
    held["update"] = h.peak
    rng = rng_state()  # this rank's (train._save gathers every rank's into the checkpoint)
    with HeldUnsharded() as h:
        checkpoint = _save(update, processor, out, 2)
    held["checkpoint"] = h.peak
    steps.append(_step(update, batch))
    final = full_model_state(update.policy)
    again, resumed_final = resumed_step(checkpoint, batch, rng, held)
    result = {"steps": steps, "resumed_step3": again, "world": world, "held_unsharded": held}
    if update.sharded:
        result["unit_sizes"] = unit_sizes(update.policy)
    if other is not None:
        result.update(_cross(other, batch, rng, final))
    if world == 1:  # for ``cross``, once the other launch wrote its checkpoint
        torch.save({"batch": batch, "rng": rng, "final": final}, out / "step3.pt")
    if accelerator.is_main_process:
        result["resumed_weights_equal"] = all(torch.equal(final[k], resumed_final[k]) for k in final)
        result["fsdp_units"] = sorted(type(m).__name__ for m in update.policy.modules() if isinstance(m, FSDPModule))
        result["prefix_sharing"] = update.share
        (out / "result.json").write_text(json.dumps(result))


def drive_checkpointing(model_dir: Path, out: Path) -> None:
    """The first two updates of ``drive`` with gradient checkpointing on (every real recipe turns it on): under
    FSDP2 each unit's forward is recomputed inside its backward, while the unit is gathered again. Writes
    checkpointing.json."""
    from sapo_vl.config import ModelConfig

    torch.manual_seed(0)
    update, processor = _build(model_dir, model=ModelConfig(dtype="float32", gradient_checkpointing=True))
    rank, world = update.accelerator.process_index, update.accelerator.num_processes
    batch, noise = global_batch(processor)
    mine = list(range(rank * len(batch) // world, (rank + 1) * len(batch) // world))
    batch = batch.select(mine)
    batch.old_logprobs = _old_logprobs(update, batch, noise[mine])
    steps = [_step(update, batch) for _ in range(2)]
    if update.accelerator.is_main_process:
        (out / "checkpointing.json").write_text(json.dumps({"steps": steps}))


def _cross(other: Path, batch, rng, final: dict) -> dict:
    """Step 3 after resuming from the step-2 checkpoint another number of processes wrote, and how far its weights
    end from this launch's uninterrupted step 3."""
    again, weights = resumed_step(other, batch, rng)
    out = {"cross_resumed_step3": again}
    if weights:  # main process
        out["cross_weights_max_diff"] = max((final[k] - weights[k]).abs().max().item() for k in final)
    return out


def cross(out_dir, model_dirs, other_dir) -> None:
    """One process, after ``run`` and the other launch: resume each model from the other launch's step-2
    checkpoint (2 -> 1) and add the result to OUT_DIR/<model>/result.json."""
    for model_dir in map(Path, model_dirs):
        out = Path(out_dir) / model_dir.name
        saved = torch.load(out / "step3.pt", weights_only=False)
        other = Path(other_dir) / model_dir.name / "checkpoints" / "step-000002"
        result = json.loads((out / "result.json").read_text())
        result.update(_cross(other, saved["batch"], saved["rng"], saved["final"]))
        (out / "result.json").write_text(json.dumps(result))


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
    choices = {"all": real_kept, "first": lambda policy, *args: real_kept(policy, *args)[:1],
               "none": lambda policy, *args: []}
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


def run(out_dir, model_dirs, other_dir=None) -> None:
    """``drive`` (and for the first model ``drive_mixed``) for each model; ``other_dir``: where another launch wrote
    the same runs (OTHER/<model>/checkpoints/step-000002, resumed here too)."""
    from accelerate.state import AcceleratorState
    from accelerate.utils import FullyShardedDataParallelPlugin

    for model_dir in map(Path, model_dirs):
        if AcceleratorState._shared_state.get("fsdp_plugin") is not None:  # it keeps the last model's wrap classes
            AcceleratorState._shared_state["fsdp_plugin"] = FullyShardedDataParallelPlugin()  # (a run has one model)
        out = Path(out_dir) / model_dir.name
        out.mkdir(parents=True, exist_ok=True)
        other = Path(other_dir) / model_dir.name / "checkpoints" / "step-000002" if other_dir else None
        drive(model_dir, out, other)
        if model_dir == Path(model_dirs[0]):
            drive_mixed(model_dir, out)
            drive_checkpointing(model_dir, out)


if __name__ == "__main__":
    torch.set_num_threads(1)
    if sys.argv[1] == "--mixed":  # fsdp_driver.py --mixed OUT_DIR MODEL_DIR: drive_mixed alone
        drive_mixed(Path(sys.argv[3]), Path(sys.argv[2]))
    elif sys.argv[1] == "--other":  # fsdp_driver.py --other OTHER_DIR OUT_DIR MODEL_DIR ...
        run(sys.argv[3], sys.argv[4:], sys.argv[2])
    else:
        run(sys.argv[1], sys.argv[2:])
    if torch.distributed.is_initialized():  # as sapo_vl.parallel.leave_process_group: not left to the exit
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
