"""Shared-prefix forwards: a micro-batch's G completions of one prompt read that prompt's forward once.

A rollout holds G completions per prompt, and a padded or packed forward runs every prompt token G times: with
image prompts of hundreds of vision tokens and short answers, most of a training forward is prompt. Here the
distinct prompts of a micro-batch go through the model once (their images encoded once), their KV cache is gathered
to one row per sequence, and the completions run on top of it. Positions are those of the full forward (the 4 rows
of Qwen3-VL: the text position and the 3-D M-RoPE rows of ``get_rope_index``, continued by one per completion token).

Everything is returned in the padded layout (n, P + C): log-probs and entropy per completion token, router logits
per token (each prompt token's row repeated for the sequences that share it), so the MoE aux loss, router statistics
and routing drift are those of the padded forward. Gradients flowing into the shared prompt are summed over its
sequences by autograd: the padded forward's gradients, float32 rounding apart (``tests/models/test_prefix.py``).

Under gradient checkpointing a layer's backward recompute calls the cache again: the prompt cache is written once and
the completions' cache stores nothing, so a recompute reads exactly what the forward read. Not used under routing
replay (the replayed experts are per sequence). Under FSDP2 every micro-batch takes this path, repeats or not, so
that every rank runs the same forward calls (``tests/test_fsdp.py``).
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property

import torch

from transformers import DynamicCache

from sapo_vl.models.packing import PACKED_MODELS, pack, position_ids
from sapo_vl.models.vision import encoder_inputs, image_inputs


def cache_kwarg(module) -> str:
    """The name of ``module.forward``'s KV-cache argument (transformers renames ``past_key_values`` to ``cache``)."""
    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


def use_shared_prefix(model, mode: str, sharded: bool) -> str:
    """``train.prefix_sharing`` resolved for ``model``: "auto" (shared-prefix forwards wherever a micro-batch repeats a
    prompt and that runs fewer tokens) or "off". Off unless ``mode`` is auto and the model is a Qwen3-VL(-MoE), and
    off under FSDP2: a shared-prefix forward runs the layers twice (the prompts, then the completions), and FSDP2
    reduce-scatters a wrap unit's gradient only after the backward of its last use, so between the completions'
    backward sweep and the prompts' every decoder layer's unsharded gradient is alive on every rank: the whole
    model's gradient, unsharded (measured on 4 CPU ranks of a 404M model: +1.5 GiB per rank, where packed forwards
    add the 0.4 GiB of sharded gradients). "always" (every micro-batch, repeats or not) is what a sharded test uses
    to compare one process's shared-prefix forwards with 2 ranks' (every rank must run the same forward calls).
    Under routing replay a micro-batch whose recorded experts cannot be shared runs padded
    (``SharedPrefix.replay``)."""
    allowed = mode == "auto" and getattr(model.config, "model_type", None) in PACKED_MODELS
    return "auto" if allowed and not sharded else "off"


class _PromptCache(DynamicCache):
    """The prompt forward's KV cache, written once per layer: under gradient checkpointing a layer's backward
    recompute calls ``update`` again, and gets its own keys and values back (the prompt has no past) instead of
    appending them a second time."""

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        if layer_idx < len(self.layers) and getattr(self.layers[layer_idx], "is_initialized", False):
            return key_states, value_states
        return super().update(key_states, value_states, layer_idx, *args, **kwargs)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Each layer's keys and values gathered to ``indices`` by ``index_select``: its backward (``index_add_``)
        sums the rows of one prompt in a fixed order, where the advanced indexing transformers uses accumulates
        them in an order that varies from run to run on several CPU threads (the gradients then differed in their
        last bits between identical runs)."""
        for layer in self.layers:
            layer.keys, layer.values = layer.keys.index_select(0, indices), layer.values.index_select(0, indices)


class _CompletionCache(DynamicCache):
    """The completions' view of a (gathered) ``_PromptCache``: each layer's prompt keys and values followed by the
    completion's, nothing stored, so a checkpointed recompute reads exactly what the forward read."""

    def __init__(self, prompt: _PromptCache):
        self.__dict__.update(prompt.__dict__)  # the same layers (prompt keys and values), mask sizes and offsets
        self.reads = 0

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        self.reads += 1
        layer = self.layers[layer_idx]
        return torch.cat([layer.keys, key_states], -2), torch.cat([layer.values, value_states], -2)


def _check_cache_used(cache, what: str) -> None:
    """A transformers version that ignored a cache passed with ``use_cache=False`` would attend to the completions
    alone: a silent wrong answer, so it is an error instead."""
    if not cache:
        raise RuntimeError(f"shared-prefix forward: the decoder did not use the {what} cache (transformers "
                           "version?); set train.prefix_sharing=off")


@contextmanager
def _cache_under_checkpointing(model):
    """transformers hands checkpointed layers no cache unless the layer says a recompute may read it again; the two
    caches above make that true."""
    layers = [m for m in model.modules() if hasattr(m, "_can_checkpoint_with_cache")]
    saved = [m.__dict__.get("_can_checkpoint_with_cache") for m in layers]
    for m in layers:
        m._can_checkpoint_with_cache = True
    try:
        yield
    finally:
        for m, value in zip(layers, saved):
            if value is None:
                del m._can_checkpoint_with_cache
            else:
                m._can_checkpoint_with_cache = value


@dataclass
class SharedPrefix:
    """The layout of a micro-batch of n sequences over B < n distinct prompts: ``prompt``, the distinct prompts'
    model inputs (B, P) with their images; ``rows`` (n,), each sequence's prompt row; ``mask`` (n, P + C), the real
    tokens in the padded layout."""

    prompt: dict
    rows: torch.Tensor
    mask: torch.Tensor

    @property
    def tokens(self) -> int:
        """Tokens one forward runs: each distinct prompt once, every completion (padded)."""
        B, P = self.prompt["input_ids"].shape
        n, T = self.mask.shape
        return B * P + n * (T - P)

    @cached_property
    def _padded_index(self) -> torch.Tensor:
        """(n * (P + C),) the forward-order row of each padded position (built once: every MoE layer's router logits
        and recorded experts go through ``to_padded``)."""
        B, P = self.prompt["input_ids"].shape
        n, T = self.mask.shape
        prompt = self.rows[:, None] * P + torch.arange(P)  # (n, P) each sequence's prompt rows
        completion = B * P + torch.arange(n * (T - P)).view(n, T - P)  # (n, C)
        return torch.cat([prompt, completion], 1).view(-1)

    def replay(self, recorded: list[torch.Tensor]) -> list[dict] | None:
        """The recorded experts (``Rollout.replay_routing``: one (n * (P + C), k) tensor per MoE layer, padded layout)
        for the two forward calls of this layout, per layer {prompt tokens: (B * P, k), completion tokens:
        (n * C, k)}: ``moe.routing`` replays each call by its token count. None when that is not exact: when
        sequences of one prompt were recorded with different prompt experts (each sequence must keep its own), or
        the two calls have as many tokens (no count tells them apart); the caller then runs the padded forward."""
        B, P = self.prompt["input_ids"].shape
        n, T = self.mask.shape
        if B * P == n * (T - P):
            return None
        rows = self.rows.tolist()
        first = torch.tensor([rows.index(b) for b in range(B)])  # (B,) each prompt's first sequence
        out = []
        for ids in recorded:
            ids = ids.view(n, T, -1)
            prompt = ids[:, :P]  # (n, P, k)
            if not torch.equal(prompt, prompt[first[self.rows]]):
                return None
            out.append({B * P: prompt[first].reshape(B * P, -1), n * (T - P): ids[:, P:].reshape(n * (T - P), -1)})
        return out

    def to_padded(self, x: torch.Tensor) -> torch.Tensor:
        """A per-token tensor in forward order, (B * P + n * C, ...), to the padded layout (n * (P + C), ...): one
        gather, a new tensor (not a view: FSDP2 warns about views returned by a wrapped forward)."""
        return x.index_select(0, self._padded_index.to(x.device))


def share_prefix(micro, mask: torch.Tensor, always: bool = False) -> SharedPrefix | None:
    """The ``SharedPrefix`` of the Rollout ``micro`` whose ``model_inputs()`` have the attention ``mask`` (its
    prompt columns trimmed the same way), or None when no two sequences share a prompt (the same tokens and the same
    images) unless ``always``."""
    starts = [0]
    for k in micro.images_per_sample:
        starts.append(starts[-1] + k)
    keys = micro.image_keys or list(range(starts[-1]))
    distinct: dict = {}
    rows = [distinct.setdefault((tuple(ids), tuple(keys[starts[i]:starts[i + 1]])), len(distinct))
            for i, ids in enumerate(micro.prompt_ids.tolist())]
    if len(distinct) == len(rows) and not always:
        return None
    uniq = micro.select([rows.index(r) for r in range(len(distinct))])  # each prompt's first sequence
    p0 = micro.span()[0]
    prompt = {"input_ids": uniq.prompt_ids[:, p0:], "attention_mask": uniq.prompt_mask[:, p0:],
              "mm_token_type_ids": uniq.prompt_mm_types[:, p0:], **image_inputs(uniq)}
    return SharedPrefix(prompt=prompt, rows=torch.tensor(rows), mask=mask)


def shared_forward(model, inputs: dict, prompt_len: int, layout: SharedPrefix, vision, router: bool):
    """(hidden, router_logits): the last hidden states that predict each completion token of ``inputs`` (n, C, H),
    and with ``router`` the router logits of every token in the padded layout (one (n * (P + C), E) tensor per MoE
    layer). ``inputs``: the micro-batch's padded inputs (their completion columns are read)."""
    prompt, rows = dict(layout.prompt), layout.rows.to(inputs["input_ids"].device)
    extra = {"output_router_logits": True} if router else {}
    images = encoder_inputs(model, prompt, vision)
    position = position_ids(model, prompt)  # (4, B, P)
    cache, key = _PromptCache(config=model.config), cache_kwarg(model.model)
    completion = inputs["input_ids"][:, prompt_len:]  # (n, C)
    steps = torch.arange(1, completion.shape[1] + 1, device=position.device)
    # use_cache=False: the caches are passed explicitly (and transformers would warn under checkpointing)
    with _cache_under_checkpointing(model):
        first = model.model(**prompt, position_ids=position, use_cache=False, **{key: cache}, **extra, **images)
        _check_cache_used(cache.get_seq_length(), "prompt")
        cache.batch_select_indices(rows)  # (n, ...) per layer: a gather, so gradients reach the one prompt forward
        view = _CompletionCache(cache)
        second = model.model(input_ids=completion, attention_mask=inputs["attention_mask"], use_cache=False,
                             position_ids=position[..., -1:][:, rows] + steps, **{key: view}, **extra)
        _check_cache_used(view.reads, "completion")
    hidden = torch.cat([first.last_hidden_state[rows, -1:], second.last_hidden_state[:, :-1]], 1)  # (n, C, H)
    logits = None
    if router:
        logits = tuple(layout.to_padded(torch.cat([a, b])) for a, b in zip(first.router_logits,
                                                                            second.router_logits))
    return hidden, logits


def forward_inputs(model, micro, packed: bool, share: str = "off") -> tuple[dict, int, object]:
    """(model inputs, P, layout) of the Rollout ``micro`` for ``policy_forward``, the layout that runs the fewest
    tokens: with ``share`` (``use_shared_prefix``'s auto | always | off), padded inputs and the ``SharedPrefix`` of
    its repeated prompts (always: of every micro-batch); with ``packed`` and padding to remove, packed (a
    ``Packing``); else padded (layout None)."""
    inputs, P = micro.model_inputs()
    real, padded = int(inputs["attention_mask"].sum()), inputs["attention_mask"].numel()
    shared = None if share == "off" else share_prefix(micro, inputs["attention_mask"], always=share == "always")
    if shared is not None and (share == "always" or shared.tokens < (real if packed else padded)):
        return inputs, P, shared
    return pack(model, micro) if packed and real < padded else (inputs, P, None)


def replay_inputs(micro, batch: tuple, any_rank=None) -> tuple[tuple, list | None]:
    """``forward_inputs``' (inputs, P, layout) of the Rollout ``micro`` and the routing to replay in that forward
    (``moe.routing``'s ``replay``): its recorded experts, in packed order for a ``Packing``, one per forward call
    for a ``SharedPrefix`` (or the padded forward where that is not exact; ``any_rank(flag)`` makes the choice the
    same on every rank under FSDP2). A ``micro`` without recorded experts is an error."""
    replay = micro.replay_routing()
    if replay is None:
        raise ValueError("routing replay: the rollout has no recorded experts to replay (the engine records the "
                         "sampler's whenever algo.routing_replay is on)")
    layout = batch[2]
    if isinstance(layout, SharedPrefix):
        shared = layout.replay(replay)  # None: not exact, the padded forward then
        if any_rank is not None and any_rank(shared is None):
            shared = None
        if shared is None:
            return (*micro.model_inputs(), None), replay
        return batch, shared
    if layout is not None:
        return batch, [layout.to_packed(ids) for ids in replay]
    return batch, replay
