"""MoE routing: record and replay the experts each token is sent to, and router statistics (load-balancing loss,
expert load, router entropy, routing drift).

Router logits come from a Qwen3-VL-MoE forward with ``output_router_logits=True``: one (B * T, E) tensor per MoE
layer. Routing drift is the fraction of completion tokens whose top-k expert set differs between the rollout-time
policy and the policy at update time: the instability that SAPO's soft gate is meant to tame in MoE models.

``routing(model, replay)`` hooks every MoE router (no fork of transformers' modelling code): it records the expert
ids each router returns, or, given the ids recorded in the rollout's forward, makes every router return those ids
again (routing replay, "R3", as verl and ms-swift have it on Megatron). Under replay the router logits still give
the gate weights, the softmax at the recorded experts, renormalised where the router renormalises its top-k
(Qwen3-MoE only with ``norm_topk_prob``), so the router keeps learning; only which experts run is fixed. A replay
under which no router hook fired raises.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from sapo_vl.errors import UserError


def moe_routers(model) -> list[torch.nn.Module]:
    """The top-k router of every MoE layer, in layer order (``*TopKRouter`` modules with ``top_k`` and
    ``weight``: Qwen3-VL-MoE and Qwen3-MoE in transformers >= 5). Empty for a dense model."""
    return [m for m in model.modules() if type(m).__name__.endswith("TopKRouter") and hasattr(m, "top_k")
            and isinstance(getattr(m, "weight", None), torch.Tensor)]


def _router_output(output, layer: int):
    if not (isinstance(output, tuple) and len(output) == 3 and all(isinstance(t, torch.Tensor) for t in output)
            and output[0].dim() == 2 and output[2].shape == output[1].shape):
        raise UserError(f"routing replay: MoE router {layer} returned {type(output).__name__}, not the (logits, "
                        "weights, expert ids) of transformers 5's TopKRouter; this transformers version's MoE block "
                        "is not supported (algo.routing_replay=none still works)")
    return output


@contextmanager
def routing(model, replay: list | None = None) -> Iterator[list]:
    """Within the block, every forward records the expert ids each MoE router returns (``used[layer]``: (tokens, k),
    the router's own order; a second forward call within the block, such as a shared-prefix forward's completion
    pass, appends its tokens); with ``replay`` (one (tokens, k) tensor per layer, or per layer a dict from each
    forward call's token count to its tensor), the routers return those ids, gate weights recomputed from their own
    logits. Yields ``used``."""
    routers = moe_routers(model)
    if replay is not None and len(replay) != len(routers):
        raise ValueError(f"routing replay has {len(replay)} layers, the model {len(routers)} MoE routers")
    used: list = [None] * len(routers)

    def hook_for(layer: int):
        def hook(module, args, output):
            logits, weights, ids = _router_output(output, layer)
            if replay is not None:
                recorded = replay[layer]
                if isinstance(recorded, dict):  # one tensor per forward call, by its token count (shared prefix)
                    if weights.shape[0] not in recorded:
                        raise ValueError(f"routing replay for layer {layer}: recorded ids for calls of "
                                         f"{sorted(recorded)} tokens, the forward routes {weights.shape[0]}")
                    recorded = recorded[weights.shape[0]]
                ids = recorded.to(device=ids.device, dtype=ids.dtype)
                if ids.shape != weights.shape:
                    raise ValueError(f"routing replay for layer {layer}: {tuple(ids.shape)} recorded ids, the "
                                     f"forward routes {tuple(weights.shape)}")
                top = torch.softmax(logits, dtype=torch.float, dim=-1).gather(-1, ids)  # as the router does
                if getattr(module, "norm_topk_prob", True):  # Qwen3-VL-MoE always; Qwen3-MoE when configured
                    top = top / top.sum(dim=-1, keepdim=True)
                weights = top.to(logits.dtype)
            used[layer] = ids.detach() if used[layer] is None else torch.cat([used[layer], ids.detach()])
            return logits, weights, ids

        return hook

    with _hooked(routers, hook_for):
        yield used
    silent = [i for i, u in enumerate(used) if u is None]
    if replay is not None and (silent or not routers):
        raise UserError(f"routing replay: no router hook fired in the forward (MoE layers {silent or 'none found'});"
                        " the forward ran on a model whose MoE routers were not hooked")


@contextmanager
def recorded_calls(model) -> Iterator[list[list[torch.Tensor]]]:
    """Within the block, each MoE router's expert ids, one (tokens, k) tensor per forward call, appended to a list
    per layer (no copying as calls accumulate: for generation, one call per decoding step), stored in
    ``routing_dtype``. Yields the lists (empty for a dense model)."""
    routers = moe_routers(model)
    calls: list[list[torch.Tensor]] = [[] for _ in routers]

    def hook_for(layer: int):
        def hook(module, args, output):
            ids = _router_output(output, layer)[2]
            calls[layer].append(ids.to(routing_dtype(module.weight.shape[0])))

        return hook

    with _hooked(routers, hook_for):
        yield calls


@contextmanager
def _hooked(routers: list[torch.nn.Module], hook_for) -> Iterator[None]:
    """``hook_for(layer)`` registered as the forward hook of each router within the block, removed after."""
    handles = [r.register_forward_hook(hook_for(i)) for i, r in enumerate(routers)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def routing_dtype(num_experts: int) -> torch.dtype:
    """The smallest integer type that holds every expert id (int8 up to 128 experts)."""
    return torch.int8 if num_experts <= 128 else torch.int16


def load_balancing_loss(router_logits: tuple[torch.Tensor, ...], attention_mask: torch.Tensor | None,
                        top_k: int) -> torch.Tensor:
    """Switch-Transformer auxiliary loss (Fedus et al. 2021, eqs. 4-6), as Qwen3-MoE uses it, over attended tokens.

    loss = E * sum_e f_e * P_e, with f_e the fraction of (token, slot) routings sent to expert e (averaged over the
    top-k slots) and P_e the mean router probability of e; all layers pooled. Equals transformers'
    ``load_balancing_loss_func`` in value and gradient (f_e carries none), without its one-hot of
    (tokens x k x E): f_e is counted by ``index_add_`` into a (k, E) table, so the only transient of the size of the
    router logits is their softmax.
    """
    dtype = torch.promote_types(router_logits[0].dtype, torch.float32)  # float32, or float64 when given
    logits = torch.cat([g.to(dtype) for g in router_logits], dim=0)  # (L * N, E)
    num_experts = logits.shape[-1]
    probs = torch.softmax(logits, dim=-1)  # (L * N, E)
    top = probs.detach().topk(top_k, dim=-1).indices  # (L * N, k)
    if attention_mask is None:
        weights = torch.ones(logits.shape[0], dtype=dtype, device=logits.device)
    else:
        weights = attention_mask.reshape(-1).to(dtype).repeat(len(router_logits)).to(logits.device)  # (L * N,)
    denom = weights.sum().clamp_min(1.0)
    slots = torch.arange(top_k, device=logits.device) * num_experts  # (k,) row offsets into the flat (k, E) table
    counts = torch.zeros(top_k * num_experts, dtype=dtype, device=logits.device)  # (k * E,)
    counts.index_add_(0, (top + slots).reshape(-1), weights.to(dtype).repeat_interleave(top_k))
    tokens_per_expert = counts.view(top_k, num_experts) / denom  # (k, E)
    prob_per_expert = (probs * weights[:, None]).sum(0) / denom  # (E,)
    return (tokens_per_expert * prob_per_expert[None]).sum() * num_experts


def completion_topk(router_logits: tuple[torch.Tensor, ...], batch_size: int, prompt_len: int,
                    top_k: int) -> torch.Tensor:
    """Top-k expert ids of each completion token in each MoE layer: (B, C, L, k), int16, sorted ascending."""
    per_layer = []
    for g in router_logits:
        g = g.view(batch_size, -1, g.shape[-1])[:, prompt_len:]  # (B, C, E)
        per_layer.append(g.topk(top_k, dim=-1).indices.sort(dim=-1).values)  # (B, C, k)
    return torch.stack(per_layer, dim=2).to(torch.int16)  # (B, C, L, k)


def routing_drift(old_topk: torch.Tensor, new_topk: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Fraction of masked completion tokens whose top-k expert set changed, per layer averaged and in any layer.

    Args: old_topk, new_topk: (B, C, L, k) sorted expert ids; mask: (B, C) response mask.
    """
    if old_topk.shape != new_topk.shape:
        raise ValueError(f"top-k shapes differ: {tuple(old_topk.shape)} vs {tuple(new_topk.shape)}")
    changed = (old_topk != new_topk).any(-1)  # (B, C, L)
    m = mask.bool()
    n = m.sum().clamp_min(1)
    per_layer = (changed & m[..., None]).sum((0, 1)).float() / n  # (L,)
    any_layer = (changed.any(-1) & m).sum().float() / n
    return {"moe/routing_drift": per_layer.mean().item(), "moe/routing_drift_any_layer": any_layer.item()}


def router_stats(router_logits: tuple[torch.Tensor, ...], attention_mask: torch.Tensor | None,
                 top_k: int) -> dict[str, float]:
    """Per-layer expert load (fraction of routed tokens per expert), max/mean imbalance and router entropy.

    Returns flat metrics: ``moe/load_imbalance`` (mean over layers of max_e load / mean_e load; 1.0 is perfectly
    balanced), ``moe/load_imbalance_max`` (worst layer), ``moe/router_entropy`` (mean per-token entropy of the
    router distribution, nats), and ``moe/layer{i}/load_max`` per layer.
    """
    metrics: dict[str, float] = {}
    imbalances, entropies = [], []
    w = None if attention_mask is None else attention_mask.reshape(-1).float()
    for i, g in enumerate(router_logits):
        g = g.detach().float()  # (N, E)
        probs = torch.softmax(g, dim=-1)
        weights = torch.ones(g.shape[0], device=g.device) if w is None else w.to(g.device)
        counts = torch.zeros(g.shape[-1], device=g.device)
        top = probs.topk(top_k, dim=-1).indices  # (N, k)
        counts.index_add_(0, top.reshape(-1), weights.repeat_interleave(top_k))
        load = counts / counts.sum().clamp_min(1e-9)  # (E,) fraction of routed token-slots
        imbalances.append((load.max() / load.mean().clamp_min(1e-9)).item())
        ent = -(probs * probs.clamp_min(1e-12).log()).sum(-1)  # (N,)
        entropies.append(((ent * weights).sum() / weights.sum().clamp_min(1.0)).item())
        metrics[f"moe/layer{i}/load_max"] = load.max().item()
    if imbalances:
        metrics["moe/load_imbalance"] = sum(imbalances) / len(imbalances)
        metrics["moe/load_imbalance_max"] = max(imbalances)
        metrics["moe/router_entropy"] = sum(entropies) / len(entropies)
    return metrics
