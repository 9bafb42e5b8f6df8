"""``sapo-vl train RECIPE.yaml [key=value ...]``: the SAPO training loop, top to bottom.

Each step: take prompts -> roll out G completions each (old log-probs from the same forward the update uses) ->
score them with verifiable rewards -> group-normalised advantages -> mini-batch updates with the policy loss
(SAPO by default) -> metrics, evaluation, checkpoints. Works as a single process and under ``accelerate launch``
(each rank rolls out its own prompts with their complete groups, so group advantages are exact; metrics and
normalisers are reduced over ranks).
"""

from __future__ import annotations

import copy
import json
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from accelerate.utils import set_seed
from transformers import TrainerState

from sapo_vl.data import check_prompt_length
from sapo_vl.errors import DataError, Interrupted, UserError
from sapo_vl.algos import ADVANTAGES, zero_variance_groups
from sapo_vl.checkpoint import (
    latest_checkpoint,
    load_trainer_state,
    resolve_resume,
    rng_state,
    save_checkpoint,
)
from sapo_vl.config import Config, check_resume, config_yaml, save_config
from sapo_vl.data.mixture import SOURCE_COLUMN, MixtureSampler, Source, load_sources
from sapo_vl.models.load import load_processor
from sapo_vl.models.moe import moe_routers
from sapo_vl.models.vision import VisionCache
from sapo_vl.plots import plot_run
from sapo_vl.rewards import REWARDS
from sapo_vl.rewards.pool import RewardPool
from sapo_vl.rollout.collate import PromptFormat, count_prompt_tokens
from sapo_vl.rollout.generate import HFEngine, SamplingParams, generate_completions, make_rollout, score_rollout
from sapo_vl.rollout.types import Rollout
from sapo_vl.memory import PhasePeaks, return_freed_blocks
from sapo_vl.parallel import (describe_sharding, even_share, leave_process_group, make_accelerator, reduce_max_values,
                              reduce_mean)
from sapo_vl.plan_terms import preflight
from sapo_vl.policy_state import (build_update, export_final, model_path, pending_rollouts, reference_model,
                                  resume_rng, training_dtype)
from sapo_vl.rundir import RunLock, StopFlag
from sapo_vl.tracking import Progress, Tracker, truncate_metrics_file
from sapo_vl.update import PolicyUpdate
from sapo_vl.warmup import warmup

# ----------------------------------------------------------------------------------------------------------------
# building blocks


def load_data(cfg: Config) -> list[Source]:
    """Every source's records with their reward names checked (``auto`` routes by them), before any model is built
    (the tiny one included)."""
    sources = load_sources(cfg.data)
    if "auto" in cfg.reward.funcs:
        for src in sources:
            for split, records in (("train", src.train), ("held-out", src.eval)):
                for rec in records:
                    if rec.get("reward") is not None:
                        REWARDS.check(rec["reward"], f"data source {src.name!r} ({split}), record {rec['id']!r}, "
                                                     "field 'reward'")
    return sources


def fit_prompts(cfg: Config, fmt: PromptFormat, sources: list[Source]) -> list[Source]:
    """Over-long prompts dropped or rejected (``data.on_error``), before any model weights are loaded."""
    count = partial(count_prompt_tokens, fmt)
    for src in sources:
        src.train = check_prompt_length(src.train, count, cfg.data.max_prompt_length, cfg.data.on_error)
        src.eval = check_prompt_length(src.eval, count, cfg.data.max_prompt_length, cfg.data.on_error)
        if not src.train:
            raise DataError(f"data source {src.name!r} has no usable training records")
    return sources


def by_source(prefix: str, records: list[dict], values: dict[str, list[float]]) -> dict[str, float]:
    """``{prefix}<metric>/by_source/<name>``: the mean of each metric over each source's samples."""
    out = {}
    names = [r.get(SOURCE_COLUMN) for r in records]
    for name in sorted({n for n in names if n is not None}):
        idx = [i for i, n in enumerate(names) if n == name]
        for metric, vals in values.items():
            out[f"{prefix}{metric}/by_source/{name}"] = sum(vals[i] for i in idx) / len(idx)
    return out


def rollout_metrics(rollout, rewards, comps, advantages) -> dict[str, float]:
    lengths = rollout.response_mask.sum(1).float()  # (N,)
    out = {"reward/mean": rewards.mean().item(), "reward/std": rewards.std().item() if len(rewards) > 1 else 0.0,
           "adv/mean": advantages.mean().item(), "adv/std": advantages.std().item() if len(rewards) > 1 else 0.0,
           "adv/abs_mean": advantages.abs().mean().item(), "response_length/mean": lengths.mean().item(),
           "response_length/max": lengths.max().item(), "truncated_frac": rollout.truncated.float().mean().item(),
           "filtered_groups": 0.0}
    for name, values in comps.items():
        applicable = [v for v in values if v is not None]
        if applicable:
            out[f"reward/{name}"] = sum(applicable) / len(applicable)
    return out


# ----------------------------------------------------------------------------------------------------------------
# the loop


@dataclass
class Run:
    """Everything the loop needs, built once by ``setup``."""

    cfg: Config
    accelerator: Any
    hf_model: Any  # the unwrapped Hugging Face model (generation, saving)
    fmt: PromptFormat
    update: PolicyUpdate  # the policy (wrapped by accelerate), optimizer, schedule and every update
    sampler: MixtureSampler
    sources: list[Source]
    train_records: list  # the sources' train records, concatenated (the sampler's indices point here)
    reward_pool: Any
    engine: HFEngine
    sampling: SamplingParams
    ref_model: Any
    start_step: int
    data_report: dict
    stop: StopFlag
    memory: PhasePeaks  # peak memory per phase (memory/<phase>/..., logged after each step)
    trainer_state: TrainerState  # what reward functions get as trainer_state (global_step: steps completed)
    last_saved: int = 0  # the step of the newest checkpoint this run can fall back to
    pending: list = field(default_factory=list)  # scored rollouts waiting rollout.staleness steps


def setup(cfg: Config, resume_from: Path | None, stop) -> Run:
    dtype = training_dtype(cfg.model)
    accelerator = make_accelerator(cfg.train, dtype)
    out_dir, is_main = Path(cfg.output_dir), accelerator.is_main_process
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "config.yaml")
        print(f"[sapo-vl] resolved config (saved to {out_dir / 'config.yaml'}):\n{config_yaml(cfg)}", flush=True)
    accelerator.wait_for_everyone()
    set_seed(cfg.seed + accelerator.process_index)

    state = load_trainer_state(resume_from) if resume_from is not None else None
    if state is not None:
        check_resume(state.get("config"), cfg, resume_from)
    sources = load_data(cfg)
    with accelerator.main_process_first():  # rank 0 builds the tiny model (model.path=tiny) before others read it
        path = model_path(cfg, resume_from)
    d = cfg.data
    fmt = PromptFormat(load_processor(path), d.system_prompt, d.min_pixels, d.max_pixels)
    preflight(cfg, path, accelerator)  # context length; on GPUs, a warning before an obvious OOM
    sources = fit_prompts(cfg, fmt, sources)
    stop.check("the data load")
    memory = PhasePeaks()
    memory.mark_baseline()  # what the process holds before any weights: it does not fall with the ranks
    with memory.phase("load"):
        update = build_update(path, cfg.model.model_copy(update={"dtype": str(dtype).removeprefix("torch.")}), cfg.algo,
                              cfg.train, cfg.rollout, accelerator, (resume_from, state) if state else None)
    stop.check("the model load")
    hf_model = accelerator.unwrap_model(update.policy).model
    if cfg.algo.routing_replay != "none" and not moe_routers(hf_model):
        raise UserError(f"algo.routing_replay={cfg.algo.routing_replay} needs an MoE model; {path} is dense")
    train_records = [rec for src in sources for rec in src.train]
    sampler = MixtureSampler([len(s.train) for s in sources], [s.weight for s in sources], cfg.seed,
                             accelerator.process_index, accelerator.num_processes)
    if resume_from is None and cfg.warmup.steps > 0:  # same seed on every rank: identical weights after it
        with memory.phase("warmup"):
            warmup(update.policy, fmt, train_records, cfg.warmup, seed=cfg.seed,
                   log=(lambda m: print(m, flush=True)) if is_main else None, stop=stop)
    with memory.phase("load"):
        ref_model = reference_model(cfg, update, fmt, accelerator, dtype, resume_from is not None) \
            if cfg.algo.kl_beta > 0 else None
    start_step = 0
    if state is not None:
        sampler.load_state_dict(state["sampler"])
        start_step = state["step"]
        resume_rng(state, cfg, accelerator)
        if is_main:
            print(f"[sapo-vl] resumed from {resume_from} at step {start_step}", flush=True)
    if update.sharded and cfg.rollout.sampler_dtype != "float32":
        raise UserError("rollout.sampler_dtype=bfloat16 samples with a copy of the whole model: not under FSDP2")
    if update.sharded and is_main:
        print(f"[sapo-vl] {describe_sharding(update.policy, accelerator)}", flush=True)
    r = cfg.rollout
    run = Run(
        cfg=cfg, accelerator=accelerator, hf_model=hf_model, fmt=fmt, update=update, sampler=sampler,
        sources=sources, train_records=train_records,
        reward_pool=RewardPool(cfg.reward.funcs, num_workers=cfg.reward.num_workers,
                               timeout_s=cfg.reward.timeout_s or None),
        engine=HFEngine(update.policy, fmt.processor, batch_size=r.generation_batch_size, stop=stop,
                        synced=update.sharded), stop=stop,
        sampling=SamplingParams(max_new_tokens=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p,
                                top_k=r.top_k),
        memory=memory, ref_model=ref_model, start_step=start_step, data_report=_data_report(sources, is_main),
        trainer_state=TrainerState(global_step=start_step, max_steps=cfg.train.total_steps),
        last_saved=start_step, pending=pending_rollouts(state, accelerator))
    run.engine.record_routing = bool(moe_routers(hf_model)) and (  # what routing drift reads, and replay replays
        update.old_logprobs_source() == "sampler" or cfg.algo.routing_replay != "none")
    return run


@torch.no_grad()
def evaluate(r: Run) -> dict[str, float]:
    """Greedy held-out accuracy (the accuracy reward == 1) and mean reward, on this rank's share of each source
    (``log.eval_limit`` prompts per source), reduced over ranks; per source too when there are several."""
    acc, limit = r.accelerator, r.cfg.log.eval_limit
    share = [rec for src in r.sources for rec in src.eval[acc.process_index::acc.num_processes][:limit]]
    first = next((src.eval[0] for src in r.sources if src.eval), None)
    padded, n = even_share(share, first, acc)  # sharded generation: every rank as many prompts as the others
    was_training = r.hf_model.training
    r.hf_model.eval()
    greedy = SamplingParams(max_new_tokens=r.cfg.rollout.max_new_tokens, temperature=0.0)
    texts = [c[0] for c in generate_completions(r.engine, r.fmt, padded, greedy)][:n] if padded else []
    r.hf_model.train(was_training)
    ids = r.fmt.processor.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []  # re-tokenized
    totals, comps = (r.reward_pool.score(texts, share, stop=r.stop, completion_ids=ids, trainer_state=r.trainer_state)
                     if share
                     else ([], {n: [] for n in r.reward_pool.names}))
    correct = [float(v is not None and v >= 1.0) for v in comps[r.cfg.reward.accuracy or r.reward_pool.names[0]]]
    stats = torch.tensor([sum(correct), sum(totals), float(len(share))], device=acc.device)
    stats = acc.reduce(stats, reduction="sum")
    n = max(stats[2].item(), 1.0)
    out = {"eval/accuracy": stats[0].item() / n, "eval/reward": stats[1].item() / n, "eval/n": stats[2].item()}
    if len(r.sources) > 1:
        out.update(reduce_mean(by_source("eval/", share, {"accuracy": correct, "reward": totals}), acc))
    return out


def rollout_phase(r: Run, records: list[dict]) -> tuple[Rollout, dict]:
    """G completions per prompt with pi_old's log-probs and MoE routing from where ``old_logprobs_source`` says: the
    sampler's, a no-grad forward here, or none (the update scores them)."""
    cfg = r.cfg
    r.hf_model.eval()
    t0 = time.perf_counter()
    engine = r.engine
    if cfg.rollout.sampler_dtype == "bfloat16":  # the mismatch stress: a bf16 copy samples, as a separate engine would
        engine = copy.copy(r.engine)
        engine.model = copy.deepcopy(r.hf_model).to(torch.bfloat16)
    rollout = make_rollout(engine, r.fmt, records, cfg.rollout.group_size, r.sampling)
    if engine is not r.engine:
        rollout.vision = VisionCache()  # not the copy's bf16 image features: the float32 forwards encode their own
    t1 = time.perf_counter()
    source = r.update.old_logprobs_source()
    if cfg.algo.rollout_correction.mode != "none":
        rollout.sampler_logprobs = rollout.old_logprobs
    if source != "sampler":
        rollout.old_logprobs = None
        if cfg.algo.routing_replay == "none":  # replay keeps the sampler's experts: every forward replays them
            rollout.routing = None
    if rollout.old_logprobs is None and source != "update":
        rollout.old_logprobs, rollout.routing = r.update.score(rollout)
    if r.ref_model is not None:
        rollout.ref_logprobs, _ = score_rollout(r.ref_model, rollout, temperature=r.sampling.temperature,
                                                micro_batch_size=cfg.rollout.generation_batch_size,
                                                packed=r.update.packed, share=r.update.share)
    return rollout, {"time/rollout": t1 - t0, "time/logprob": time.perf_counter() - t1}


def reward_phase(r: Run, rollout: Rollout) -> tuple[list[int], dict]:
    """Score in the worker pool, group-normalised advantages; returns the sequences to train on and metrics."""
    t0 = time.perf_counter()
    ids = [row[mask.bool()].tolist() for row, mask in zip(rollout.completion_ids.cpu(), rollout.response_mask.cpu())]
    totals, comps = r.reward_pool.score(rollout.completions, rollout.records, stop=r.stop, completion_ids=ids,
                                        trainer_state=r.trainer_state)
    rewards = torch.tensor(totals, dtype=torch.float32)  # (N,)
    rollout.rewards = rewards
    rollout.advantages = ADVANTAGES[r.cfg.algo.advantage](rewards, rollout.group_ids)  # (N,)
    metrics = rollout_metrics(rollout, rewards, comps, rollout.advantages)
    correct = [float(v is not None and v >= 1.0) for v in comps[r.cfg.reward.accuracy or r.reward_pool.names[0]]]
    metrics["accuracy"] = sum(correct) / len(totals)
    metrics["reward/not_applicable_frac"] = r.reward_pool.last_not_applicable / len(totals)  # scored as 0
    if len(r.sources) > 1:
        metrics.update(by_source("", rollout.records, {"reward": totals, "accuracy": correct}))
    metrics["reward/timeouts"] = float(len(r.reward_pool.last_timed_out))
    metrics.update(r.reward_pool.last_metrics)  # reward/<function>/<name>, from the functions' log_metric
    if r.reward_pool.last_extra and r.accelerator.is_main_process:
        _log_samples(r, rollout, totals)
    keep = list(range(len(rollout)))
    drop = torch.zeros(len(rollout), dtype=torch.bool)  # (N,)
    if r.cfg.reward.on_timeout == "skip" and r.reward_pool.last_timed_out:  # whole groups: no exact advantage
        lost = rollout.group_ids[r.reward_pool.last_timed_out].unique()
        drop |= torch.isin(rollout.group_ids, lost)
    if r.cfg.algo.filter_zero_variance:  # DAPO dynamic sampling
        flat = zero_variance_groups(rewards, rollout.group_ids)  # (N,) bool
        metrics["filtered_groups"] = float(flat.sum().item() / r.cfg.rollout.group_size)
        drop |= flat
    if drop.any():
        if r.accelerator.num_processes == 1:
            keep = [i for i in keep if not drop[i]]
        else:  # every rank must run the same optimizer steps: mask the dropped sequences out instead
            rollout.response_mask = rollout.response_mask * (~drop).long()[:, None]
    metrics["time/reward"] = time.perf_counter() - t0
    return keep, metrics


def train_step(r: Run) -> dict:
    """One step: prompts -> rollout -> rewards and advantages -> policy update. Returns the step's metrics.

    With ``rollout.staleness = s`` the update trains on the rollout made ``s`` steps earlier, scored by the policy
    of its time (an asynchronous trainer's lag); the first ``s`` steps only fill the queue."""
    t0 = time.perf_counter()
    records = [r.train_records[i] for i in r.sampler.next(r.cfg.rollout.prompts_per_step)]
    with r.memory.phase("rollout"):
        rollout, metrics = rollout_phase(r, records)
    with r.memory.phase("reward"):
        keep, reward_metrics = reward_phase(r, rollout)
    metrics.update(reward_metrics)
    r.pending.append(rollout.select(keep) if len(keep) < len(rollout) else rollout)
    t1 = time.perf_counter()
    r.hf_model.train()
    scoring = 0.0  # the old log-probs, when the update scored them (old_logprobs_source "update")
    if len(r.pending) > r.cfg.rollout.staleness:
        with r.memory.phase("update"):
            update_metrics = r.update.update(r.pending.pop(0))
        scoring = update_metrics.pop("time/logprob")
        metrics.update(update_metrics)
    metrics["time/logprob"] += scoring
    metrics["time/update"] = time.perf_counter() - t1 - scoring
    n_tokens = int(rollout.response_mask.sum() + rollout.prompt_mask.sum())
    metrics["time/step"] = time.perf_counter() - t0
    metrics["throughput/tokens_per_s"] = n_tokens / max(metrics["time/step"], 1e-9)
    return reduce_mean(metrics, r.accelerator)


def run(cfg: Config) -> dict:
    """Train with ``cfg``; returns a summary (held-out accuracy before / after, last step).

    The output directory is locked for the run (``RunLock``). SIGTERM / SIGINT are honoured in every phase: in the
    build and warm-up nothing is saved; mid-step (generation, rewards) the step is dropped and the last completed one
    saved; during an update the update finishes and is saved. A second signal exits at once."""
    out_dir = Path(cfg.output_dir)
    stop = StopFlag().install()  # first thing: a signal during the build or the warm-up still stops cleanly
    return_freed_blocks()  # host memory: freed tensors go back to the OS, not into the allocator's heap
    with RunLock(out_dir) if int(os.environ.get("RANK", "0")) == 0 else nullcontext():
        resume_from = resolve_resume(cfg.resume, out_dir)
        if cfg.resume == "never" and (existing := latest_checkpoint(out_dir)) is not None:
            raise UserError(f"output_dir {out_dir} already has checkpoints (up to {existing.name}); use "
                            "resume=auto to continue, or a new output_dir")
        try:
            r = setup(cfg, resume_from, stop)
        except Interrupted as why:
            print(f"[sapo-vl] {stop.signal}: {why}; stopped before training started, nothing saved", flush=True)
            return {"step": 0, "stopped": stop.signal}
        summary = _loop(r, out_dir, resume_from)
        leave_process_group(r.accelerator)
        return summary


def _loop(r: Run, out_dir: Path, resume_from: Path | None) -> dict:
    """Held-out eval, the steps (checkpoints on schedule and on a stop), the final eval and the plots."""
    cfg, is_main = r.cfg, r.accelerator.is_main_process
    tracker = Tracker(out_dir, cfg.log.backends, project=cfg.log.project, config=cfg.to_dict(),
                      is_main_process=is_main, resume_step=r.start_step if resume_from is not None else None)
    progress = Progress(cfg.train.total_steps, r.start_step, enabled=is_main and cfg.log.progress)
    if is_main and (samples := out_dir / "samples.jsonl").exists():  # steps after the one resumed from go
        truncate_metrics_file(samples, r.start_step if resume_from is not None else 0)
    summary: dict = dict(r.data_report)
    step = r.start_step
    if r.start_step == 0 and (before := _evaluate_unless_stopped(r)) is not None:
        summary["eval_before"] = before
        tracker.log({**before, **r.data_report}, step=0)
        _say(r, f"held-out accuracy before training: {_accuracy(before)}")
    for step in range(r.start_step + 1, cfg.train.total_steps + 1):
        if r.stop():
            step -= 1
            break
        snapshot = (r.sampler.state_dict(), rng_state())  # what a step dropped mid-way is saved with
        try:
            metrics = train_step(r)
            r.trainer_state.global_step = step
        except Interrupted:
            step -= 1
            if step > r.last_saved:
                _save(out_dir, step, r, snapshot)
            _say(r, f"{r.stop.signal} during step {step + 1}: that step is dropped, step {r.last_saved} is saved")
            break
        if cfg.log.eval_every and step % cfg.log.eval_every == 0 and step != cfg.train.total_steps:
            metrics.update(_evaluate_unless_stopped(r) or {})
        tracker.log(metrics, step=step)
        progress.update(step, metrics)
        stopping = _any_rank(r, r.stop())
        if (cfg.log.save_every and step % cfg.log.save_every == 0) or step == cfg.train.total_steps or stopping:
            with r.memory.phase("checkpoint"):
                _save(out_dir, step, r)
        if step == cfg.train.total_steps and cfg.log.export:
            with r.memory.phase("export"):
                export_final(out_dir, cfg.log.export_dtype, r.accelerator)
        peaks = reduce_max_values(r.memory.take(), r.accelerator)  # this step's peak memory per phase
        if peaks:
            tracker.log(peaks, step=step)
        if stopping:
            _say(r, f"{r.stop.signal} received: saved step {step} and stopping")
            break
    if not r.stop() and (after := _evaluate_unless_stopped(r)) is not None:  # a preempted run leaves at once
        summary["eval_after"] = after
        tracker.log(after, step=step)
        _say(r, f"held-out accuracy: before {_accuracy(summary.get('eval_before'))} -> after {_accuracy(after)}")
    progress.close()
    tracker.close()
    if is_main and "eval_after" in summary and cfg.log.plot:
        for p in plot_run(out_dir):
            print(f"[sapo-vl] plot: {p}", flush=True)
    summary["step"] = step
    if r.stop():
        summary["stopped"] = r.stop.signal
    return summary


def _evaluate_unless_stopped(r: Run) -> dict | None:
    try:
        with r.memory.phase("eval"):
            return evaluate(r)
    except Interrupted:
        return None


def _accuracy(result: dict | None) -> str:
    if result is None:
        return "not measured"
    if not result["eval/n"]:
        return "no held-out prompts"
    return f"{result['eval/accuracy']:.3f} ({int(result['eval/n'])} prompts)"


def _say(r: Run, message: str) -> None:
    if r.accelerator.is_main_process:
        print(f"[sapo-vl] {message}", flush=True)


def _any_rank(r: Run, flag: bool) -> bool:
    """True on every rank when it is true on one (ranks must agree to save and stop together)."""
    if r.accelerator.num_processes == 1:
        return flag
    t = torch.tensor([float(flag)], device=r.accelerator.device)
    return bool(r.accelerator.reduce(t, reduction="sum").item() > 0)


# ----------------------------------------------------------------------------------------------------------------
# helpers


def _log_samples(r: Run, rollout: Rollout, totals: list[float]) -> None:
    """OUTPUT_DIR/samples.jsonl: the step's samples with the columns reward functions logged with log_extra."""
    extra = r.reward_pool.last_extra
    with open(Path(r.cfg.output_dir) / "samples.jsonl", "a") as fh:
        for i, rec in enumerate(rollout.records):
            row = {"step": r.trainer_state.global_step + 1, "id": rec.get("id"), "completion": rollout.completions[i],
                   "reward": totals[i], **{column: values[i] for column, values in extra.items()}}
            fh.write(json.dumps(row, default=str) + "\n")


def _save(out_dir: Path, step: int, r: Run, snapshot: tuple | None = None) -> None:
    """Checkpoint (collective: every rank writes its own shards); every rank's RNG state and stale-rollout queue are
    gathered so each resumes its own. ``snapshot`` (sampler state, RNG state) replaces the current ones: a step
    dropped mid-way is redone on resume."""
    sampler_state, rng = snapshot if snapshot is not None else (r.sampler.state_dict(), rng_state())
    rngs, pending = [rng], [r.pending]  # one per rank
    if r.accelerator.num_processes > 1 and dist.is_initialized():
        gathered = [None] * r.accelerator.num_processes
        dist.all_gather_object(gathered, (rng, r.pending))
        rngs, pending = [g[0] for g in gathered], [g[1] for g in gathered]
    state = {**r.update.state_dict(), "sampler": sampler_state, "config": r.cfg.to_dict(), "pending": pending,
             "rng": rngs}
    save_checkpoint(out_dir, step, policy=r.update.policy, optimizer=r.update.optimizer, processor=r.fmt.processor,
                    trainer_state=state, keep_last=r.cfg.log.keep_last)
    r.last_saved = step


def _data_report(sources: list[Source], is_main: bool) -> dict:
    def skipped(recs):
        report = getattr(recs, "report", None)
        if report is not None and report.num_skipped and is_main:
            print(f"[sapo-vl] {report.summary()}", flush=True)
        return float(report.num_skipped if report is not None else 0)

    return {"data/train_records": float(sum(len(s.train) for s in sources)),
            "data/eval_records": float(sum(len(s.eval) for s in sources)),
            "data/train_skipped": sum(skipped(s.train) for s in sources),
            "data/eval_skipped": sum(skipped(s.eval) for s in sources)}
