"""``sapo-vl train RECIPE.yaml [key=value ...]``: the SAPO training loop, top to bottom.

Each step: take prompts -> roll out G completions each (old log-probs from the same forward the update uses) ->
score them with verifiable rewards -> group-normalised advantages -> mini-batch updates with the policy loss
(SAPO by default) -> metrics, evaluation, checkpoints. Works as a single process and under ``accelerate launch``
(each rank rolls out its own prompts with their complete groups, so group advantages are exact; metrics and
normalisers are reduced over ranks).
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sapo_vl  # noqa: F401  (torchvision compat before transformers)

import torch

from sapo_vl.algos import ADVANTAGES, get_policy_loss, zero_variance_groups
from sapo_vl.checkpoint import (
    latest_checkpoint,
    load_trainer_state,
    resolve_resume,
    save_checkpoint,
    set_rng_state,
)
from sapo_vl.config import Config, config_yaml, load_config, save_config
from sapo_vl.models.logprobs import PolicyModule
from sapo_vl.rollout.generate import HFEngine, SamplingParams, make_rollout, score_rollout
from sapo_vl.rollout.types import Rollout
from sapo_vl.update import minibatch_loss_and_backward

# ----------------------------------------------------------------------------------------------------------------
# building blocks (flat arguments; the Config stops at run())


class PromptSampler:
    """Epoch-wise seeded permutations over the dataset; its state (epoch, position) is checkpointed."""

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1):
        self.n, self.seed, self.rank, self.world = n, seed, rank, world
        self.epoch, self.pos = 0, 0

    def _perm(self) -> list[int]:
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()

    def next(self, k: int) -> list[int]:
        """k indices for this rank (ranks take disjoint slices of the same global order)."""
        out = []
        while len(out) < k:
            perm = self._perm()
            take = perm[self.pos:]
            need = (k - len(out)) * self.world
            chunk = take[:need]
            self.pos += len(chunk)
            out.extend(chunk[self.rank::self.world])
            if self.pos >= self.n:
                self.epoch, self.pos = self.epoch + 1, 0
        return out[:k]

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.pos = state["epoch"], state["pos"]


def lr_lambda(schedule: str, warmup: int, total: int):
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return f


def load_datasets(cfg: Config, processor):
    from sapo_vl.data import DATASETS, RecordError, check_prompt_length, load_dataset_by_name
    from sapo_vl.rollout.collate import CollateError, count_prompt_tokens

    d = cfg.data

    def build(name, split, kwargs):
        if _takes_on_error(name, DATASETS[name]) and "on_error" not in kwargs:
            kwargs = {**kwargs, "on_error": d.on_error}
        return load_dataset_by_name(name, split=split, **kwargs)

    train = build(d.dataset, d.split, d.kwargs)
    evals = build(d.eval_dataset or d.dataset, d.eval_split, {**d.kwargs, **d.eval_kwargs})

    def count(rec):
        try:
            return count_prompt_tokens(processor, rec, system_prompt=d.system_prompt, min_pixels=d.min_pixels,
                                       max_pixels=d.max_pixels)
        except CollateError as err:  # raised or counted as a skip by check_prompt_length, per data.on_error
            raise RecordError("collate", -1, rec.get("id"), "prompt/images", str(err)) from err

    train = check_prompt_length(train, count, d.max_prompt_length, d.on_error)
    evals = check_prompt_length(evals, count, d.max_prompt_length, d.on_error)
    if not train:
        raise ValueError(f"dataset {d.dataset!r} has no usable training records")
    return train, evals


def build_policy(cfg: Config, device, checkpoint: Path | None = None):
    """Load the policy from ``checkpoint`` (resume) or model.path; "tiny" builds the offline tiny Qwen3-VL-MoE
    into the run directory."""
    from sapo_vl.models.load import load_policy
    from sapo_vl.models.tiny import TinyConfig, make_tiny_model

    m = cfg.model
    path = checkpoint if checkpoint is not None else m.path
    if path == "tiny":
        path = Path(cfg.output_dir) / "tiny_init"
        if not (path / "config.json").is_file():
            make_tiny_model(path, TinyConfig(**m.tiny))
    return load_policy(path, dtype=m.dtype, device=device, attn_implementation=m.attn_implementation,
                       experts_implementation=m.experts_implementation,
                       gradient_checkpointing=m.gradient_checkpointing, freeze_vision=m.freeze_vision,
                       min_pixels=cfg.data.min_pixels, max_pixels=cfg.data.max_pixels)


def count_correct(components: dict[str, list], accuracy_key: str) -> float:
    """Samples whose accuracy reward is 1 (None = not applicable counts as not correct)."""
    return sum(1.0 for v in components[accuracy_key] if v is not None and v >= 1.0)


@torch.no_grad()
def evaluate(model, processor, records, reward_pool, cfg: Config, accelerator) -> dict[str, float]:
    """Greedy held-out accuracy (the accuracy reward == 1) and mean reward, on this rank's share, reduced."""
    from sapo_vl.rollout.generate import generate_completions

    share = records[accelerator.process_index::accelerator.num_processes][:cfg.log.eval_limit]
    was_training = model.training
    model.eval()
    texts = [c[0] for c in generate_completions(
        model, processor, share, n=1, max_new_tokens=cfg.rollout.max_new_tokens, temperature=0.0,
        batch_size=cfg.rollout.generation_batch_size, min_pixels=cfg.data.min_pixels,
        max_pixels=cfg.data.max_pixels, system_prompt=cfg.data.system_prompt)]
    model.train(was_training)
    totals, comps = reward_pool.score(texts, share)
    correct = count_correct(comps, cfg.reward.accuracy or reward_pool.names[0])
    stats = torch.tensor([correct, sum(totals), float(len(share))], device=accelerator.device)
    stats = accelerator.reduce(stats, reduction="sum")
    n = max(stats[2].item(), 1.0)
    return {"eval/accuracy": stats[0].item() / n, "eval/reward": stats[1].item() / n, "eval/n": stats[2].item()}


def reduce_mean(values: dict[str, float], accelerator) -> dict[str, float]:
    """Mean of each metric over the ranks that report it (ranks may lack a key, e.g. no negative-advantage token
    for a SAPO gate statistic)."""
    if accelerator.num_processes == 1 or not values:
        return values
    import torch.distributed as dist

    key_lists: list = [None] * accelerator.num_processes
    dist.all_gather_object(key_lists, sorted(values))
    keys = sorted(set().union(*key_lists))
    sums = torch.tensor([[values.get(k, 0.0), float(k in values)] for k in keys], dtype=torch.float64,
                        device=accelerator.device)  # (K, 2) value, present
    sums = accelerator.reduce(sums, reduction="sum")
    return {k: (v / n) for k, (v, n) in zip(keys, sums.tolist()) if n > 0}


def rollout_metrics(rollout, rewards, comps, advantages, filtered: int) -> dict[str, float]:
    lengths = rollout.response_mask.sum(1).float()  # (N,)
    out = {"reward/mean": rewards.mean().item(), "reward/std": rewards.std().item() if len(rewards) > 1 else 0.0,
           "adv/mean": advantages.mean().item(), "adv/std": advantages.std().item() if len(rewards) > 1 else 0.0,
           "adv/abs_mean": advantages.abs().mean().item(), "response_length/mean": lengths.mean().item(),
           "response_length/max": lengths.max().item(), "truncated_frac": rollout.truncated.float().mean().item(),
           "filtered_groups": float(filtered)}
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
    policy: Any  # PolicyModule, wrapped by accelerate (DDP / FSDP / DeepSpeed)
    hf_model: Any  # the unwrapped Hugging Face model (generation, saving)
    processor: Any
    optimizer: Any
    scheduler: Any
    params: list
    sampler: PromptSampler
    train_records: list
    eval_records: list
    reward_pool: Any
    engine: HFEngine
    sampling: SamplingParams
    loss_fn: Any
    advantage_fn: Any
    ref_model: Any
    top_k_experts: int | None
    start_step: int
    data_report: dict


def setup(cfg: Config, resume_from: Path | None) -> Run:
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from sapo_vl.rewards.pool import RewardPool

    cuda = torch.cuda.is_available()
    mp = cfg.train.mixed_precision
    accelerator = Accelerator(mixed_precision="bf16" if (mp == "bf16" or (mp == "auto" and cuda)) else "no",
                              cpu=not cuda)
    out_dir, is_main = Path(cfg.output_dir), accelerator.is_main_process
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "config.yaml")
        print(f"[sapo-vl] resolved config (saved to {out_dir / 'config.yaml'}):\n{config_yaml(cfg)}", flush=True)
    accelerator.wait_for_everyone()
    set_seed(cfg.seed + accelerator.process_index)

    with accelerator.main_process_first():  # rank 0 builds the tiny model (model.path=tiny) before others read it
        model, processor = build_policy(cfg, accelerator.device, checkpoint=resume_from)
    train_records, eval_records = load_datasets(cfg, processor)
    data_report = _data_report(train_records, eval_records, is_main)
    policy = PolicyModule(model)
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.train.lr, betas=tuple(cfg.train.adam_betas),
                                  weight_decay=cfg.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.train.lr_schedule,
                                                                       cfg.train.warmup_steps, cfg.train.total_steps))
    sampler = PromptSampler(len(train_records), cfg.seed, accelerator.process_index, accelerator.num_processes)
    if resume_from is None and cfg.warmup.steps > 0:  # same seed on every rank: identical weights after it
        from sapo_vl.warmup import warmup

        w = cfg.warmup
        warmup(model, processor, train_records, steps=w.steps, batch_size=w.batch_size, lr=w.lr, labels=w.labels,
               seed=cfg.seed, system_prompt=cfg.data.system_prompt, min_pixels=cfg.data.min_pixels,
               max_pixels=cfg.data.max_pixels, log=(lambda m: print(m, flush=True)) if is_main else None)
    ref_model = _reference_model(cfg, model, accelerator) if cfg.algo.kl_beta > 0 else None
    start_step = 0
    if resume_from is not None:
        state = load_trainer_state(resume_from)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.load_state_dict(state["sampler"])
        start_step = state["step"]
        set_rng_state(state["rng"][accelerator.process_index] if isinstance(state["rng"], list) else state["rng"])
        if is_main:
            print(f"[sapo-vl] resumed from {resume_from} at step {start_step}", flush=True)
    policy, optimizer = accelerator.prepare(policy, optimizer)
    hf_model = accelerator.unwrap_model(policy).model
    text_config = getattr(hf_model.config, "text_config", hf_model.config)
    return Run(
        cfg=cfg, accelerator=accelerator, policy=policy, hf_model=hf_model, processor=processor,
        optimizer=optimizer, scheduler=scheduler, params=params, sampler=sampler, train_records=train_records,
        eval_records=eval_records, reward_pool=RewardPool(cfg.reward.funcs, num_workers=cfg.reward.num_workers),
        engine=HFEngine(hf_model, processor, batch_size=cfg.rollout.generation_batch_size),
        sampling=SamplingParams(max_new_tokens=cfg.rollout.max_new_tokens, temperature=cfg.rollout.temperature,
                                top_p=cfg.rollout.top_p, top_k=cfg.rollout.top_k),
        loss_fn=get_policy_loss(cfg.algo.policy_loss), advantage_fn=ADVANTAGES[cfg.algo.advantage],
        ref_model=ref_model, top_k_experts=getattr(text_config, "num_experts_per_tok", None),
        start_step=start_step, data_report=data_report)


def rollout_phase(r: Run, records: list[dict]) -> tuple[Rollout, dict]:
    """G completions per prompt, then old log-probs and MoE routing from the update's own forward."""
    cfg = r.cfg
    r.hf_model.eval()
    t0 = time.perf_counter()
    rollout = make_rollout(r.engine, r.hf_model, r.processor, records, group_size=cfg.rollout.group_size,
                           params=r.sampling, min_pixels=cfg.data.min_pixels, max_pixels=cfg.data.max_pixels,
                           system_prompt=cfg.data.system_prompt, with_old_logprobs=False)
    t1 = time.perf_counter()
    rollout.old_logprobs, rollout.router_topk = score_rollout(
        r.hf_model, rollout, temperature=r.sampling.temperature, micro_batch_size=cfg.rollout.generation_batch_size,
        chunk_size=cfg.train.logprob_chunk_size, top_k_experts=r.top_k_experts)
    if r.ref_model is not None:
        rollout.ref_logprobs, _ = score_rollout(r.ref_model, rollout, temperature=r.sampling.temperature,
                                                micro_batch_size=cfg.rollout.generation_batch_size)
    return rollout, {"time/rollout": t1 - t0, "time/logprob": time.perf_counter() - t1}


def reward_phase(r: Run, rollout: Rollout) -> tuple[list[int], dict]:
    """Score in the worker pool, group-normalised advantages; returns the sequences to train on and metrics."""
    t0 = time.perf_counter()
    totals, comps = r.reward_pool.score(rollout.completions, rollout.records)
    rewards = torch.tensor(totals, dtype=torch.float32)  # (N,)
    rollout.rewards = rewards
    rollout.advantages = r.advantage_fn(rewards, rollout.group_ids)  # (N,)
    metrics = rollout_metrics(rollout, rewards, comps, rollout.advantages, 0)
    metrics["accuracy"] = count_correct(comps, r.cfg.reward.accuracy or r.reward_pool.names[0]) / len(totals)
    keep = list(range(len(rollout)))
    if r.cfg.algo.filter_zero_variance:  # DAPO dynamic sampling
        flat = zero_variance_groups(rewards, rollout.group_ids)  # (N,) bool
        metrics["filtered_groups"] = float(flat.sum().item() / r.cfg.rollout.group_size)
        if r.accelerator.num_processes == 1:
            keep = [i for i in keep if not flat[i]]
        else:  # every rank must run the same optimizer steps: mask the dropped sequences out instead
            rollout.response_mask = rollout.response_mask * (~flat).long()[:, None]
    metrics["time/reward"] = time.perf_counter() - t0
    return keep, metrics


def update_phase(r: Run, batch: Rollout) -> dict:
    """Mini-batches x epochs; one optimizer step per mini-batch; micro-batches by token budget inside."""
    cfg = r.cfg
    t0 = time.perf_counter()
    r.hf_model.train()
    per_step: list[dict] = []
    n_mb = min(cfg.train.num_mini_batches, len(batch))
    for _ in range(cfg.train.epochs if len(batch) else 0):
        order = torch.randperm(len(batch)).tolist()
        for k in range(n_mb):
            m = minibatch_loss_and_backward(
                r.policy, batch.select(order[k::n_mb]), loss_fn=r.loss_fn, loss_hparams=cfg.algo.loss_hparams,
                aggregation=cfg.algo.aggregation, max_len=cfg.rollout.max_new_tokens, kl_beta=cfg.algo.kl_beta,
                kl_estimator=cfg.algo.kl_estimator, moe_aux_coef=cfg.algo.moe_aux_coef,
                micro_batch_tokens=cfg.train.micro_batch_tokens, temperature=r.sampling.temperature,
                chunk_size=cfg.train.logprob_chunk_size, accelerator=r.accelerator, top_k_experts=r.top_k_experts)
            m["grad_norm"] = float(r.accelerator.clip_grad_norm_(r.params, cfg.train.max_grad_norm))
            r.optimizer.step()
            r.optimizer.zero_grad(set_to_none=True)
            per_step.append(m)
    r.scheduler.step()
    metrics = {key: sum(m[key] for m in per_step if key in m) / sum(1 for m in per_step if key in m)
               for key in sorted({k for m in per_step for k in m})}
    metrics.update({"lr": r.scheduler.get_last_lr()[0], "optimizer_steps": float(len(per_step)),
                    "time/update": time.perf_counter() - t0})
    return metrics


def train_step(r: Run) -> dict:
    """One step: prompts -> rollout -> rewards and advantages -> policy update. Returns the step's metrics."""
    t0 = time.perf_counter()
    records = [r.train_records[i] for i in r.sampler.next(r.cfg.rollout.prompts_per_step)]
    rollout, metrics = rollout_phase(r, records)
    keep, reward_metrics = reward_phase(r, rollout)
    metrics.update(reward_metrics)
    metrics.update(update_phase(r, rollout.select(keep) if len(keep) < len(rollout) else rollout))
    n_tokens = int(rollout.response_mask.sum() + rollout.prompt_mask.sum())
    metrics["time/step"] = time.perf_counter() - t0
    metrics["throughput/tokens_per_s"] = n_tokens / max(metrics["time/step"], 1e-9)
    return reduce_mean(metrics, r.accelerator)


def run(cfg: Config) -> dict:
    """Train with ``cfg``; returns a summary (held-out accuracy before / after, last step)."""
    from sapo_vl.tracking import Progress, Tracker

    out_dir = Path(cfg.output_dir)
    resume_from = resolve_resume(cfg.resume, out_dir)
    if cfg.resume == "never" and (existing := latest_checkpoint(out_dir)) is not None:
        raise ValueError(f"output_dir {out_dir} already has checkpoints (up to {existing.name}); use resume=auto "
                         f"to continue, or a new output_dir")
    r = setup(cfg, resume_from)
    is_main = r.accelerator.is_main_process
    tracker = Tracker(out_dir, cfg.log.backends, project=cfg.log.project, config=cfg.to_dict(),
                      is_main_process=is_main, resume_step=r.start_step if resume_from is not None else None)
    progress = Progress(cfg.train.total_steps, r.start_step, enabled=is_main and cfg.log.progress)
    stop = _install_signal_handlers()
    summary: dict = dict(r.data_report)
    if r.start_step == 0:
        summary["eval_before"] = evaluate(r.hf_model, r.processor, r.eval_records, r.reward_pool, cfg, r.accelerator)
        tracker.log({**summary["eval_before"], **r.data_report}, step=0)
        if is_main:
            print(f"[sapo-vl] held-out accuracy before training: {summary['eval_before']['eval/accuracy']:.3f}",
                  flush=True)

    step = r.start_step
    for step in range(r.start_step + 1, cfg.train.total_steps + 1):
        metrics = train_step(r)
        if cfg.log.eval_every and step % cfg.log.eval_every == 0 and step != cfg.train.total_steps:
            metrics.update(evaluate(r.hf_model, r.processor, r.eval_records, r.reward_pool, cfg, r.accelerator))
        tracker.log(metrics, step=step)
        progress.update(step, metrics)
        if (cfg.log.save_every and step % cfg.log.save_every == 0) or step == cfg.train.total_steps \
                or stop["requested"]:
            _save(out_dir, step, r)
        if stop["requested"]:
            if is_main:
                print(f"[sapo-vl] {stop['signal']} received: saved step {step} and stopping", flush=True)
            break

    if not stop["requested"]:  # a preempted run saves and leaves; evaluation could outlast the grace period
        summary["eval_after"] = evaluate(r.hf_model, r.processor, r.eval_records, r.reward_pool, cfg, r.accelerator)
        tracker.log(summary["eval_after"], step=step)
    progress.close()
    tracker.close()
    r.reward_pool.close()
    if is_main and "eval_after" in summary:
        before = summary.get("eval_before", {}).get("eval/accuracy")
        after = summary["eval_after"]["eval/accuracy"]
        print(f"[sapo-vl] held-out accuracy: before {before if before is None else f'{before:.3f}'} -> after "
              f"{after:.3f} ({int(summary['eval_after']['eval/n'])} prompts)", flush=True)
        if cfg.log.plot:
            from sapo_vl.plots import plot_run

            for p in plot_run(out_dir):
                print(f"[sapo-vl] plot: {p}", flush=True)
    summary["step"] = step
    return summary


# ----------------------------------------------------------------------------------------------------------------
# helpers


def _takes_on_error(name: str, builder) -> bool:
    """File datasets forward on_error to load_records; other builders take it only if they name it."""
    import inspect

    return name in ("jsonl", "parquet", "disk") or "on_error" in inspect.signature(builder).parameters


def _reference_model(cfg: Config, model, accelerator):
    """The frozen KL reference: the policy RL starts from (after any warm-up), loaded only when kl_beta > 0.

    It is saved once to OUTPUT_DIR/reference when a warm-up changed the weights, so a resumed run uses the same one.
    """
    import copy

    from sapo_vl.models.load import load_policy

    ref_dir = Path(cfg.output_dir) / "reference"
    if (ref_dir / "config.json").is_file():
        ref, _ = load_policy(ref_dir, dtype=cfg.model.dtype, device=accelerator.device)
    elif cfg.warmup.steps > 0:
        ref = copy.deepcopy(model)
        if accelerator.is_main_process:
            ref.save_pretrained(ref_dir)
        accelerator.wait_for_everyone()
    else:
        ref, _ = build_policy(cfg, accelerator.device)
    return ref.requires_grad_(False).eval()


def _save(out_dir: Path, step: int, r: Run) -> None:
    """Checkpoint on the main process; every rank's RNG state is gathered so each resumes its own stream."""
    import torch.distributed as dist

    from sapo_vl.checkpoint import rng_state

    rng = rng_state()
    if r.accelerator.num_processes > 1 and dist.is_initialized():
        gathered = [None] * r.accelerator.num_processes
        dist.all_gather_object(gathered, rng)
        rng = gathered
    if r.accelerator.is_main_process:
        state = {"optimizer": r.optimizer.state_dict(), "scheduler": r.scheduler.state_dict(),
                 "sampler": r.sampler.state_dict()}
        if isinstance(rng, list):
            state["rng"] = rng  # overrides save_checkpoint's own (this process's) rng entry
        save_checkpoint(out_dir, step, model=r.hf_model, processor=r.processor, trainer_state=state,
                        keep_last=r.cfg.log.keep_last)
    r.accelerator.wait_for_everyone()


def _data_report(train_records, eval_records, is_main: bool) -> dict:
    def skipped(recs):
        report = getattr(recs, "report", None)
        if report is not None and report.num_skipped and is_main:
            print(f"[sapo-vl] {report.summary()}", flush=True)
        return float(report.num_skipped if report is not None else 0)

    return {"data/train_records": float(len(train_records)), "data/eval_records": float(len(eval_records)),
            "data/train_skipped": skipped(train_records), "data/eval_skipped": skipped(eval_records)}


def _install_signal_handlers() -> dict:
    """SIGTERM / SIGINT: finish the current step, save a checkpoint, exit cleanly."""
    stop = {"requested": False, "signal": None}

    def handler(signum, _frame):
        if stop["requested"]:  # a second signal: stop now
            raise KeyboardInterrupt
        stop.update(requested=True, signal=signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            signal.signal(sig, handler)
        except ValueError:  # not the main thread
            pass
    return stop


def cli_main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        from sapo_vl.config import describe_config

        print("usage: sapo-vl train RECIPE.yaml [dotted.key=value ...]\n\n" + (__doc__ or "")
              + "\nconfig keys (default values; a recipe or key=value overrides them):\n"
              + "\n".join(describe_config()))
        return 0
    try:
        cfg = load_config(argv[0], argv[1:])
    except ValueError as err:
        print(f"sapo-vl train: {err}", file=sys.stderr)
        return 2
    if cfg.model.path == "tiny":  # everything is built locally: never ask the hub
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    run(cfg)
    return 0
