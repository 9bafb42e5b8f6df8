"""The policy update of one rollout, whole: mini-batches x epochs, micro-batches by token budget with exact gradient
accumulation, gradient clipping, one optimizer step per mini-batch, and the learning-rate schedule.

Every micro-batch's loss is aggregated with the FULL mini-batch's normalisers (``global_normalizers``), so the sum
of the micro-batch gradients equals the gradient of the mini-batch loss, whatever the aggregation mode
(tests/test_update.py checks it on the real model). Under data parallelism the normalisers are summed over ranks
and the loss is multiplied by the world size, because DDP and FSDP2 average gradients. Under FSDP2 every forward
and backward is collective, so each rank runs as many micro-batches as the rank with the most (the extra ones are
empty: a real sequence with weight 0), and gradients are reduce-scattered after every micro-batch (accumulating
them unsharded would hold a full-size gradient on every GPU); tests/test_fsdp.py matches 2 sharded processes to
one process on the same global batch.

Where exact for the model (``train.packing=auto``: Qwen3-VL(-MoE) under sdpa or flash_attention_2), each
micro-batch is packed without padding (``sapo_vl.models.packing``) and the token budget counts real tokens only;
outputs come back in the padded layout, and routing replay gets the recorded experts in packed order. Where a
micro-batch repeats a prompt (``train.prefix_sharing=auto``), the prompt runs once and its completions read its KV
cache (``sapo_vl.models.prefix``); each micro-batch takes the layout that runs the fewest tokens.

The one approximation is the MoE load-balancing term (``moe_aux_coef > 0``): it is a product of two token means
(Switch Transformer), so it is computed per micro-batch and weighted by the micro-batch's share of sequences.
"""

from __future__ import annotations

import math
import time
import warnings
from contextlib import nullcontext
from dataclasses import replace

import torch
from torch.distributed.fsdp import register_fsdp_forward_method

from sapo_vl.algos import POLICY_LOSSES, aggregate, global_normalizers, kl_penalty, rollout_correction_weights
from sapo_vl.checkpoint import load_checkpoint
from sapo_vl.errors import UserError
from sapo_vl.models.logprobs import PolicyModule
from sapo_vl.models.moe import completion_topk, router_stats, routing, routing_drift
from sapo_vl.models.packing import use_packing
from sapo_vl.models.prefix import forward_inputs, replay_inputs, use_shared_prefix
from sapo_vl.parallel import is_sharded, reduce_max
from sapo_vl.rollout.generate import score_rollout
from sapo_vl.rollout.types import Rollout, to_device


def token_budget_split(lengths: list[int], budget: int, packed: bool = False) -> list[list[int]]:
    """Consecutive groups of sequence indices whose size stays within ``budget`` tokens: padded (count x longest),
    or with ``packed`` the real tokens (their sum). A sequence longer than the budget gets a micro-batch of its own."""
    groups: list[list[int]] = []
    current: list[int] = []
    longest = total = 0
    for i, n in enumerate(lengths):
        if current and (total + n if packed else (len(current) + 1) * max(longest, n)) > budget:
            groups.append(current)
            current, longest, total = [], 0, 0
        current.append(i)
        longest, total = max(longest, n), total + n
    if current:
        groups.append(current)
    return groups


def fused_adamw(params: list[torch.Tensor], device: torch.device | None = None) -> dict:
    """AdamW's fused kernel (one kernel for all parameters: 4.1-5.9x faster steps for the tiny model's 86 tensors on 2
    CPU cores, ``benchmarks/bench_optimizer.py``) where torch has it for the parameters' device (``device``: where
    parameters still on the meta device will live); its per-parameter loop elsewhere."""
    devices = {device.type} if device is not None else {p.device.type for p in params}
    return {"fused": True} if params and devices <= {"cpu", "cuda"} else {}


def lr_lambda(schedule: str, warmup: int, total: int):
    """Linear warm-up over ``warmup`` steps, then constant or cosine decay to 0 at ``total``."""
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return f


class _WeightedMeans:
    """Weighted means of the metrics micro-batches report (not every micro-batch reports every key)."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.weights: dict[str, float] = {}

    def add(self, key: str, value: float, weight: float) -> None:
        self.sums[key] = self.sums.get(key, 0.0) + float(value) * weight
        self.weights[key] = self.weights.get(key, 0.0) + weight

    def means(self) -> dict[str, float]:
        return {k: self.sums[k] / self.weights[k] for k in self.sums if self.weights[k] > 0}


class PolicyUpdate:
    """Owns the optimisation of the policy: the optimizer (AdamW), the schedule, and every update.

    Built from the ``algo`` (loss, aggregation, KL, MoE aux), ``train`` (optimizer, batching) and ``rollout``
    (sampling temperature, generation budget) config sections. With an ``accelerator`` the policy and optimizer
    are prepared for it (DDP / FSDP2). ``model`` may be empty (parameters on the meta device, for sharded loading):
    FSDP2 then shards it without allocating, and the trainer fills the shards (``sapo_vl.models.shards``); the
    optimizer keeps the same parameter objects. A checkpoint's optimizer and scheduler state: ``resume``.
    """

    def __init__(self, model, algo, train, rollout, accelerator=None):
        self.algo, self.train, self.rollout, self.accelerator = algo, train, rollout, accelerator
        self.loss_fn = POLICY_LOSSES[algo.policy_loss]
        text_config = getattr(model.config, "text_config", model.config)
        self.top_k_experts = getattr(text_config, "num_experts_per_tok", None)
        self.sharded = is_sharded(accelerator)
        self.policy = PolicyModule(model, accelerator is not None and accelerator.num_processes > 1)
        self.model, self.packed = model, use_packing(model, train.packing)  # packed: padding-free micro-batches
        visual = getattr(getattr(model, "model", model), "visual", None)
        # a frozen vision tower: the step's cached image features serve every training forward
        self.vision_trains = visual is not None and any(p.requires_grad for p in visual.parameters())
        trainable = [p for p in self.policy.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=train.lr, betas=tuple(train.adam_betas),
                                           weight_decay=train.weight_decay,
                                           **fused_adamw(trainable, accelerator.device if accelerator else None))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(train.lr_schedule, train.warmup_steps, train.total_steps))
        # train.prefix_sharing (auto | off): a micro-batch's repeated prompts run once (sapo_vl.models.prefix)
        self.share = use_shared_prefix(model, train.prefix_sharing, self.sharded)
        if accelerator is not None:
            self.policy, self.optimizer = accelerator.prepare(self.policy, self.optimizer)
        if self.sharded:
            register_fsdp_forward_method(self.policy, "generate")
            register_fsdp_forward_method(self.policy, "call")
        self.params = [p for p in self.policy.parameters() if p.requires_grad]  # FSDP2's are new (DTensors)

    def state_dict(self) -> dict:
        """The schedule's state (the optimizer's is written by each rank into the checkpoint's shards)."""
        return {"scheduler": self.scheduler.state_dict()}

    def resume(self, checkpoint, state: dict) -> None:
        """The optimizer state from ``checkpoint``'s shards (any number of processes wrote them) and the schedule
        from its trainer ``state``. Collective under FSDP2."""
        load_checkpoint(checkpoint, self.policy, self.optimizer, weights=False)
        self.scheduler.load_state_dict(state["scheduler"])

    def old_logprobs_source(self) -> str:
        """Where pi_old's log-probs (and MoE routing) come from; the one place that decides (``rollout.old_logprobs``):

        - ``"update"``: this update trains the very policy that made the rollout (one epoch, no staleness;
          FSDP2-sharded only with one mini-batch, as ranks may keep different numbers of rows and every forward is
          collective there), so the rollout comes without log-probs and ``update`` scores them itself.
        - ``"sampler"``: the sampler's own (``HFEngine.sample``), no forward at all. Always with "sampler"; with
          "auto" where they equal a scoring forward's to float32 rounding (float32 weights and sampler, no bf16
          autocast) and a forward would run (not "update" with one mini-batch: no pass, ratio 1 exactly),
          or under routing replay (the sampler's log-probs are then those of the very experts it replays).
          In bf16 they differ from a forward's by bf16 rounding; "sampler" then takes pi_old to be the
          distribution the tokens were drawn from, as vLLM-based trainers do.
        - ``"score"``: a no-grad forward of the policy in the rollout phase (``score``).

        Under routing replay the experts are always the sampler's: the engine records them, and every scoring and
        training forward replays them (R3, arXiv 2510.11370), so replay adds no forward to any of the three."""
        ro, train, replay = self.rollout, self.train, self.algo.routing_replay != "none"
        by_update = (train.epochs == 1 and ro.staleness == 0 and (train.num_mini_batches == 1 or not self.sharded))
        exact = (self.model.dtype == torch.float32 and getattr(self.accelerator, "mixed_precision", "no") == "no"
                 and ro.sampler_dtype == "float32")
        free = by_update and train.num_mini_batches == 1
        if ro.old_logprobs == "sampler" or (ro.old_logprobs == "auto" and exact and (replay or not free)):
            return "sampler"
        return "update" if by_update else "score"

    def update(self, batch: Rollout) -> dict[str, float]:
        """Mini-batches x epochs over ``batch``, one optimizer step per mini-batch, then one schedule step.

        A ``batch`` without old log-probs was made by this very policy (``old_logprobs_source`` is "update"). pi_old
        is then the policy until its first optimizer step, so the first mini-batch reads its old log-probs from its
        own forward, detached (exactly: the same weights), and the other rows are scored by one no-grad forward just
        before that step (all rows with more than one epoch): one mini-batch's forward fewer than scoring the whole
        rollout apart. Its seconds are ``time/logprob``."""
        per_step: list[dict] = []
        n_mb = min(self.train.num_mini_batches, len(batch))
        scoring = 0.0
        for _ in range(self.train.epochs if len(batch) else 0):
            order = torch.randperm(len(batch)).tolist()
            minis = [order[k::n_mb] for k in range(n_mb)]
            first_free = batch.old_logprobs is None and self.train.epochs == 1
            if batch.old_logprobs is None:
                start = time.perf_counter()
                batch = self._score(batch, [i for m in minis[1:] for i in m] if first_free else order)
                scoring = time.perf_counter() - start
            for k, idx in enumerate(minis):
                mb = batch.select(idx)
                if k == 0 and first_free:  # pi_old is the policy now: its own forward gives them
                    mb = replace(mb, old_logprobs=None, routing=mb.routing if self.algo.routing_replay != "none"
                                 else None)  # replayed: the sampler's experts; else drift 0
                per_step.append(self.step(mb))
        with warnings.catch_warnings():  # a step with nothing to train (every group dropped) still counts
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
            self.scheduler.step()
        metrics = {key: sum(m[key] for m in per_step if key in m) / sum(1 for m in per_step if key in m)
                   for key in sorted({k for m in per_step for k in m})}
        # the first mini-batch's ratio, before this update moved the policy: the mismatch with pi_old's source
        first = per_step[0] if per_step else {}
        metrics.update({k.replace("ratio/", "ratio_start/"): v for k, v in first.items() if k.startswith("ratio/")})
        metrics.update({"lr": self.scheduler.get_last_lr()[0], "optimizer_steps": float(len(per_step)),
                        "time/logprob": scoring})
        return metrics

    def _forward_inputs(self, micro: Rollout) -> tuple[tuple, list | None]:
        """(inputs, P, layout) of a forward of ``micro`` and, under routing replay, the experts it replays."""
        batch = forward_inputs(self.model, micro, self.packed, self.share)
        if self.algo.routing_replay == "none":
            return batch, None
        agree = (lambda flag: bool(reduce_max(int(flag), self.accelerator))) if self.sharded else None
        return replay_inputs(micro, batch, agree)

    def score(self, batch: Rollout) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Old log-probs (N, C) and MoE routing of ``batch`` under the policy as it is now: ``score_rollout`` (no
        grad) in eval mode, with this update's temperature, packing and shared-prefix forwards (the computation on
        the other side of the ratio). The rollout phase and ``update`` both score through here."""
        training = self.model.training
        self.model.eval()
        try:
            return score_rollout(self.policy, batch, temperature=self.rollout.temperature,
                                 micro_batch_size=self.rollout.generation_batch_size,
                                 chunk_size=self.train.logprob_chunk_size, inputs=self._forward_inputs)
        finally:
            self.model.train(training)

    def _score(self, batch: Rollout, rows: list[int]) -> Rollout:
        """``batch`` with the old log-probs and routing of ``rows`` scored (``score``); the other rows' stay zero
        (never read). Under routing replay the routing stays the sampler's, which the scoring forward replayed."""
        if not rows:
            return batch
        old, recorded = self.score(batch.select(rows))
        index = torch.as_tensor(rows)
        logprobs = old.new_zeros(batch.completion_ids.shape).index_copy_(0, index, old)
        if self.algo.routing_replay != "none":
            recorded = batch.routing
        elif recorded is not None:
            recorded = recorded.new_zeros((len(batch),) + recorded.shape[1:]).index_copy_(0, index, recorded)
        return replace(batch, old_logprobs=logprobs, routing=recorded)

    def step(self, mb: Rollout) -> dict[str, float]:
        """One optimizer step on the mini-batch ``mb``: accumulate, clip, step."""
        metrics = self.accumulate(mb)
        if self.accelerator is not None:
            norm = self.accelerator.clip_grad_norm_(self.params, self.train.max_grad_norm)
        else:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.train.max_grad_norm)
        metrics["grad_norm"] = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return metrics

    def _reduce_sum(self, value: int) -> int:
        if self.accelerator is None or self.accelerator.num_processes == 1:
            return value
        t = torch.tensor([float(value)], device=self.accelerator.device)
        return int(self.accelerator.reduce(t, reduction="sum").item())

    def accumulate(self, mb: Rollout) -> dict[str, float]:
        """Forward + backward over ``mb`` in micro-batches; gradients accumulate in ``.grad``. Returns metrics."""
        acc, algo = self.accelerator, self.algo
        world = acc.num_processes if acc is not None else 1
        max_len = self.rollout.max_new_tokens if algo.aggregation == "seq-mean-token-sum-norm" else None
        norm = global_normalizers(mb.response_mask, max_len=max_len)
        norm["global_num_tokens"] = self._reduce_sum(norm["global_num_tokens"])
        norm["global_num_seqs"] = self._reduce_sum(norm["global_num_seqs"])
        groups = token_budget_split((mb.prompt_mask.sum(1) + mb.response_mask.sum(1)).tolist(),
                                    self.train.micro_batch_tokens, packed=self.packed)
        if self.sharded:  # as many forwards and backwards as the other ranks: empty groups run with weight 0
            groups += [[]] * (reduce_max(len(groups), acc) - len(groups))
        device = acc.device if acc is not None else next(self.policy.parameters()).device
        means = _WeightedMeans()
        loss_total, n_tokens_total = 0.0, max(int(mb.response_mask.sum()), 1)
        for j, idx in enumerate(groups):
            micro = mb.select(idx or [0])
            last = j == len(groups) - 1
            sync = nullcontext() if acc is None or last or self.sharded else acc.no_sync(self.policy)
            (inputs, P, packing), replay = self._forward_inputs(micro)
            with sync, routing(self.policy, replay) as used:  # hooks stay for a checkpointed backward's re-forward
                loss, out, mask = self._micro_loss(micro, (to_device(inputs, device), P, packing), norm,
                                                   len(idx) / len(mb), means if idx else _WeightedMeans())
                used = list(used)  # this forward's experts (a checkpointed backward's re-forward appends more)
                loss = loss if idx else loss * 0.0
                (acc.backward if acc is not None else torch.Tensor.backward)(loss * world)
            loss_total += loss.item() * world  # summed over ranks (reduce_mean's mean x world): the global loss
            if not idx:
                continue
            weight = int(mask.sum()) / n_tokens_total
            tokens = inputs["attention_mask"] if packing is None else packing.mask  # (n, T) real tokens
            if packing is not None and used and used[0] is not None:
                used = [packing.to_padded(u) for u in used]
            self._diagnostics(out, mask, tokens, len(idx) / len(mb), weight, means)
            self._drift(micro, out, used, P, weight, means)
        metrics = means.means()
        metrics.update(loss=loss_total, micro_batches=float(len(groups)))
        return metrics

    def _micro_loss(self, micro: Rollout, batch: tuple, norm: dict, share: float, means: _WeightedMeans):
        """The micro-batch's share of the mini-batch objective (policy loss + KL + MoE aux); ``batch``: its
        (model inputs, P, Packing or None) on the device."""
        algo = self.algo
        inputs, P, packing = batch
        device = inputs["input_ids"].device
        out = self.policy(inputs, P, temperature=self.rollout.temperature, chunk_size=self.train.logprob_chunk_size,
                          with_entropy=True, vision=None if self.vision_trains else micro.vision, packing=packing)
        C = out.logprobs.shape[1]
        mask = micro.response_mask[:, :C].to(device)  # (n, C)
        # no old log-probs: the rollout gets this one optimizer step, so pi_old = pi_theta (exactly: same weights)
        old = out.logprobs.detach() if micro.old_logprobs is None else micro.old_logprobs[:, :C].to(device)
        res = self.loss_fn(logprobs=out.logprobs, old_logprobs=old, advantages=micro.advantages.to(device),
                           response_mask=mask, **algo.loss_hparams)
        per_token, metrics = res.per_token_loss, res.metrics
        if algo.rollout_correction.mode != "none":  # TIS / MIS against the sampler's log-probs
            if micro.sampler_logprobs is None:
                raise UserError("algo.rollout_correction needs the sampler's log-probs; this rollout has none")
            weights, extra = rollout_correction_weights(old, micro.sampler_logprobs[:, :C].to(device), mask,
                                                        **algo.rollout_correction.model_dump())
            per_token, metrics = per_token * weights.to(per_token.dtype), {**metrics, **extra}
        loss = aggregate(per_token, mask, algo.aggregation, **norm)
        n_tok = int(mask.sum())
        for k, v in metrics.items():
            means.add(k, v, n_tok)
        if algo.kl_beta > 0:
            kl = kl_penalty(out.logprobs, micro.ref_logprobs[:, :C].to(device), algo.kl_estimator, mask)
            loss = loss + algo.kl_beta * aggregate(kl, mask, algo.aggregation, **norm)
            means.add("kl", (kl * mask).sum().item() / max(n_tok, 1), n_tok)
        if out.aux_loss is not None and algo.moe_aux_coef > 0:
            loss = loss + algo.moe_aux_coef * out.aux_loss * share
        return loss, out, mask

    def _diagnostics(self, out, mask, tokens, share: float, weight: float, means: _WeightedMeans) -> None:
        """Entropy and MoE router statistics (over the real ``tokens`` (n, T)) from tensors the forward has."""
        k = self.top_k_experts
        means.add("entropy", (out.entropy * mask).sum().item() / max(int(mask.sum()), 1), weight)
        if out.router_logits is None:
            return
        if out.aux_loss is not None:
            means.add("moe/aux_loss", out.aux_loss.item(), share)
        for key, v in router_stats(out.router_logits, tokens, k or 1).items():
            means.add(key, v, share)

    def _drift(self, micro: Rollout, out, used: list, prompt_width: int, weight: float, means: _WeightedMeans) -> None:
        """Routing drift: the experts the training forward used vs those of the rollout, per completion token; under
        replay (drift 0 by design) also ``moe/router_drift``, what the router itself would have chosen. A
        mini-batch whose pi_old is this forward's own policy (``update``'s first, no recorded experts) counts with
        drift 0, as it does when the sampler recorded them: the metric is over every trained token either way."""
        on_policy = micro.routing is None and micro.old_logprobs is None
        if (micro.routing is None and not on_policy) or not used or used[0] is None:
            return
        n, c1, P = len(micro), micro.span()[1], micro.prompt_len
        now = torch.stack([u.view(n, -1, u.shape[-1])[:, prompt_width:] for u in used], 2).cpu().sort(-1).values
        old = now if on_policy else micro.routing[:, P:P + c1].long().sort(-1).values  # (n, C', L, k)
        mask = micro.response_mask[:, :c1]
        for key, v in routing_drift(old, now, mask).items():
            means.add(key, v, weight)
        if self.algo.routing_replay == "rollout" and out.router_logits is not None:
            natural = completion_topk(out.router_logits, n, prompt_width, old.shape[-1]).cpu().long()
            means.add("moe/router_drift", routing_drift(old, natural, mask)["moe/routing_drift"], weight)
