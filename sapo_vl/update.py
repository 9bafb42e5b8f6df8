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

The one approximation is the MoE load-balancing term (``moe_aux_coef > 0``): it is a product of two token means
(Switch Transformer), so it is computed per micro-batch and weighted by the micro-batch's share of sequences.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch

from sapo_vl.algos import POLICY_LOSSES, aggregate, global_normalizers, kl_penalty
from sapo_vl.models.logprobs import PolicyModule
from sapo_vl.models.moe import completion_topk, router_stats, routing_drift
from sapo_vl.parallel import full_optimizer_state, is_sharded, load_optimizer_state, reduce_max
from sapo_vl.rollout.types import Rollout


def token_budget_split(lengths: list[int], budget: int) -> list[list[int]]:
    """Consecutive groups of sequence indices whose padded size (count x longest) stays within ``budget`` tokens.
    A sequence longer than the budget gets a micro-batch of its own."""
    groups: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i, n in enumerate(lengths):
        if current and (len(current) + 1) * max(longest, n) > budget:
            groups.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, n)
    if current:
        groups.append(current)
    return groups


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
    are prepared for it (DDP / FSDP2), then ``state`` (a checkpoint's optimizer and scheduler) is loaded.
    """

    def __init__(self, model, algo, train, rollout, accelerator=None, state: dict | None = None):
        self.algo, self.train, self.rollout, self.accelerator = algo, train, rollout, accelerator
        self.loss_fn = POLICY_LOSSES[algo.policy_loss]
        text_config = getattr(model.config, "text_config", model.config)
        self.top_k_experts = getattr(text_config, "num_experts_per_tok", None)
        self.policy = PolicyModule(model)
        self.optimizer = torch.optim.AdamW([p for p in self.policy.parameters() if p.requires_grad], lr=train.lr,
                                           betas=tuple(train.adam_betas), weight_decay=train.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(train.lr_schedule, train.warmup_steps, train.total_steps))
        self.sharded = is_sharded(accelerator)
        if accelerator is not None:
            self.policy, self.optimizer = accelerator.prepare(self.policy, self.optimizer)
        if self.sharded:
            from torch.distributed.fsdp import register_fsdp_forward_method

            register_fsdp_forward_method(self.policy, "generate")
        self.params = [p for p in self.policy.parameters() if p.requires_grad]  # FSDP2's are new (DTensors)
        if state is not None:
            load_optimizer_state(self.policy, self.optimizer, state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])

    def state_dict(self) -> dict:
        """Optimizer (whole, keyed by parameter name) and scheduler state. Collective under FSDP2."""
        return {"optimizer": full_optimizer_state(self.policy, self.optimizer),
                "scheduler": self.scheduler.state_dict()}

    def update(self, batch: Rollout) -> dict[str, float]:
        """Mini-batches x epochs over ``batch``, one optimizer step per mini-batch, then one schedule step."""
        per_step: list[dict] = []
        n_mb = min(self.train.num_mini_batches, len(batch))
        for _ in range(self.train.epochs if len(batch) else 0):
            order = torch.randperm(len(batch)).tolist()
            for k in range(n_mb):
                per_step.append(self.step(batch.select(order[k::n_mb])))
        self.scheduler.step()
        metrics = {key: sum(m[key] for m in per_step if key in m) / sum(1 for m in per_step if key in m)
                   for key in sorted({k for m in per_step for k in m})}
        metrics.update({"lr": self.scheduler.get_last_lr()[0], "optimizer_steps": float(len(per_step))})
        return metrics

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
                                    self.train.micro_batch_tokens)
        if self.sharded:  # as many forwards and backwards as the other ranks: empty groups run with weight 0
            groups += [[]] * (reduce_max(len(groups), acc) - len(groups))
        device = acc.device if acc is not None else next(self.policy.parameters()).device
        means = _WeightedMeans()
        loss_total, n_tokens_total = 0.0, max(int(mb.response_mask.sum()), 1)
        for j, idx in enumerate(groups):
            micro = mb.select(idx or [0])
            last = j == len(groups) - 1
            sync = nullcontext() if acc is None or last or self.sharded else acc.no_sync(self.policy)
            with sync:
                loss, out, mask, inputs = self._micro_loss(micro, norm, len(idx) / len(mb), device,
                                                           means if idx else _WeightedMeans())
                loss = loss if idx else loss * 0.0
                (acc.backward if acc is not None else torch.Tensor.backward)(loss * world)
            loss_total += loss.item() * world  # summed over ranks (reduce_mean's mean x world): the global loss
            if idx:
                self._diagnostics(micro, out, mask, inputs, len(idx) / len(mb), int(mask.sum()) / n_tokens_total,
                                  means)
        metrics = means.means()
        metrics.update(loss=loss_total, micro_batches=float(len(groups)))
        return metrics

    def _micro_loss(self, micro: Rollout, norm: dict, share: float, device, means: _WeightedMeans):
        """The micro-batch's share of the mini-batch objective (policy loss + KL + MoE aux)."""
        algo = self.algo
        inputs, P = micro.model_inputs()
        inputs = {k: v.to(device) for k, v in inputs.items()}
        out = self.policy(inputs, P, temperature=self.rollout.temperature, chunk_size=self.train.logprob_chunk_size,
                          with_entropy=True)
        C = out.logprobs.shape[1]
        mask = micro.response_mask[:, :C].to(device)  # (n, C)
        res = self.loss_fn(logprobs=out.logprobs, old_logprobs=micro.old_logprobs[:, :C].to(device),
                           advantages=micro.advantages.to(device), response_mask=mask, **algo.loss_hparams)
        loss = aggregate(res.per_token_loss, mask, algo.aggregation, **norm)
        n_tok = int(mask.sum())
        for k, v in res.metrics.items():
            means.add(k, v, n_tok)
        if algo.kl_beta > 0:
            kl = kl_penalty(out.logprobs, micro.ref_logprobs[:, :C].to(device), algo.kl_estimator, mask)
            loss = loss + algo.kl_beta * aggregate(kl, mask, algo.aggregation, **norm)
            means.add("kl", (kl * mask).sum().item() / max(n_tok, 1), n_tok)
        if out.aux_loss is not None and algo.moe_aux_coef > 0:
            loss = loss + algo.moe_aux_coef * out.aux_loss * share
        return loss, out, mask, (inputs, P)

    def _diagnostics(self, micro: Rollout, out, mask, inputs, share: float, weight: float,
                     means: _WeightedMeans) -> None:
        """Entropy and MoE router statistics from tensors the forward already has."""
        (inputs, P), k = inputs, self.top_k_experts
        means.add("entropy", (out.entropy * mask).sum().item() / max(int(mask.sum()), 1), weight)
        if out.router_logits is None:
            return
        if out.aux_loss is not None:
            means.add("moe/aux_loss", out.aux_loss.item(), share)
        for key, v in router_stats(out.router_logits, inputs["attention_mask"], k or 1).items():
            means.add(key, v, share)
        if micro.router_topk is not None and k:
            C = mask.shape[1]
            new_topk = completion_topk(out.router_logits, len(micro), P, k).cpu()
            for key, v in routing_drift(micro.router_topk[:, :C], new_topk, micro.response_mask[:, :C]).items():
                means.add(key, v, weight)
