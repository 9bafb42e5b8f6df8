"""One policy update on a mini-batch of a rollout: micro-batches by token budget, exact gradient accumulation.

Every micro-batch's loss is aggregated with the FULL mini-batch's normalisers (``global_normalizers``), so the sum
of the micro-batch gradients equals the gradient of the mini-batch loss, whatever the aggregation mode
(tests/test_update.py checks it on the real model). Under data parallelism the normalisers are summed over ranks
and the loss is multiplied by the world size, because DDP averages gradients.

The one approximation is the MoE load-balancing term (``moe_aux_coef > 0``): it is a product of two token means
(Switch Transformer), so it is computed per micro-batch and weighted by the micro-batch's share of sequences.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from sapo_vl.algos import aggregate, global_normalizers, kl_penalty
from sapo_vl.models.moe import completion_topk, router_stats, routing_drift
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


def _reduce_sum(value: int, accelerator) -> int:
    if accelerator is None or accelerator.num_processes == 1:
        return value
    t = torch.tensor([float(value)], device=accelerator.device)
    return int(accelerator.reduce(t, reduction="sum").item())


def minibatch_loss_and_backward(policy, mb: Rollout, *, loss_fn, loss_hparams: dict, aggregation: str,
                                max_len: int | None, kl_beta: float, kl_estimator: str, moe_aux_coef: float,
                                micro_batch_tokens: int, temperature: float, chunk_size: int, accelerator=None,
                                top_k_experts: int | None = None) -> dict[str, float]:
    """Forward + backward over ``mb`` in micro-batches; gradients accumulate in ``.grad``. Returns metrics."""
    world = accelerator.num_processes if accelerator is not None else 1
    norm = global_normalizers(mb.response_mask, max_len=max_len if aggregation == "seq-mean-token-sum-norm" else None)
    norm["global_num_tokens"] = _reduce_sum(norm["global_num_tokens"], accelerator)
    norm["global_num_seqs"] = _reduce_sum(norm["global_num_seqs"], accelerator)
    lengths = (mb.prompt_mask.sum(1) + mb.response_mask.sum(1)).tolist()
    groups = token_budget_split(lengths, micro_batch_tokens)
    device = accelerator.device if accelerator is not None else next(policy.parameters()).device
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    n_tokens_total = max(int(mb.response_mask.sum()), 1)

    def add(key, value, weight):  # weighted mean over the micro-batches that report ``key``
        sums[key] = sums.get(key, 0.0) + float(value) * weight
        weights[key] = weights.get(key, 0.0) + weight

    for j, idx in enumerate(groups):
        micro = mb.select(idx)
        inputs, P = micro.model_inputs()
        inputs = {k: v.to(device) for k, v in inputs.items()}
        sync = nullcontext() if accelerator is None or j == len(groups) - 1 else accelerator.no_sync(policy)
        with sync:
            out = policy(inputs, P, temperature=temperature, chunk_size=chunk_size, with_entropy=True)
            C = out.logprobs.shape[1]
            mask = micro.response_mask[:, :C].to(device)  # (n, C)
            adv = micro.advantages.to(device)  # (n,)
            res = loss_fn(logprobs=out.logprobs, old_logprobs=micro.old_logprobs[:, :C].to(device), advantages=adv,
                          response_mask=mask, **loss_hparams)
            loss = aggregate(res.per_token_loss, mask, aggregation, **norm)
            if kl_beta > 0:
                kl = kl_penalty(out.logprobs, micro.ref_logprobs[:, :C].to(device), kl_estimator, mask)
                kl_term = aggregate(kl, mask, aggregation, **norm)
                loss = loss + kl_beta * kl_term
                add("kl", (kl * mask).sum().item() / max(int(mask.sum()), 1), int(mask.sum()))
            if out.aux_loss is not None and moe_aux_coef > 0:
                loss = loss + moe_aux_coef * out.aux_loss * (len(idx) / len(mb))
            backward = accelerator.backward if accelerator is not None else torch.Tensor.backward
            backward(loss * world)
        n_tok = int(mask.sum())
        weight = n_tok / n_tokens_total
        loss_sum = sums.get("loss_total", 0.0) + loss.item()  # micro losses add up to the mini-batch loss
        sums["loss_total"], weights["loss_total"] = loss_sum, 1.0
        add("entropy", (out.entropy * mask).sum().item() / max(n_tok, 1), weight)
        for k, v in res.metrics.items():
            add(k, v, weight)
        if out.router_logits is not None:
            if out.aux_loss is not None:
                add("moe/aux_loss", out.aux_loss.item(), len(idx) / len(mb))
            for k, v in router_stats(out.router_logits, inputs["attention_mask"], top_k_experts or 1).items():
                add(k, v, len(idx) / len(mb))
            if micro.router_topk is not None and top_k_experts:
                new_topk = completion_topk(out.router_logits, len(idx), P, top_k_experts).cpu()
                drift = routing_drift(micro.router_topk[:, :C], new_topk, micro.response_mask[:, :C])
                for k, v in drift.items():
                    add(k, v, weight)
    metrics = {k: sums[k] / weights[k] for k in sums if weights[k] > 0}
    metrics["loss"] = metrics.pop("loss_total")
    metrics["micro_batches"] = float(len(groups))
    return metrics
