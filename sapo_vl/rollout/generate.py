"""Rollout: G sampled completions per prompt, old log-probs and MoE routing, as one ``Rollout`` batch.

The engine interface is small (``RolloutEngine.generate``) so that a vLLM engine can stand beside the Hugging Face
one. Whatever samples the tokens, the old log-probs are recomputed by ``policy_forward``, the very function the
update uses, so the importance ratio is exactly 1 at the first update step (no train/rollout mismatch from
different kernels).
"""

from __future__ import annotations

from dataclasses import dataclass
from contextlib import nullcontext
from typing import NamedTuple, Protocol

import torch
import torch.nn.functional as F
from transformers import DynamicCache, LogitsProcessorList, StoppingCriteriaList
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from sapo_vl.errors import Interrupted
from sapo_vl.models.decode import FusedDecoder, LayerDecoder, fused_decoding_supported
from sapo_vl.models.logprobs import PolicyModule, scale_logits
from sapo_vl.models.moe import recorded_calls, routing, routing_dtype
from sapo_vl.models.packing import PACKED_MODELS, position_ids
from sapo_vl.models.prefix import cache_kwarg, forward_inputs
from sapo_vl.models.vision import VisionCache, encoder_inputs, every_rank_encodes
from sapo_vl.parallel import compute_dtype, gathered, kept_units
from sapo_vl.rollout.collate import PromptFormat, collate_prompts
from sapo_vl.rollout.types import PromptBatch, Rollout, to_device

VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
# Whatever else a checkpoint's generation_config.json switches on (Qwen2.5-VL ships repetition_penalty 1.05) is
# switched off: the sampling distribution must stay softmax(logits / T), up to top-k / top-p, which is what
# ``score_rollout`` scores. transformers fills every generate() argument left unset from the model's config.
NEUTRAL_GENERATION = dict(
    num_beams=1, repetition_penalty=1.0, encoder_repetition_penalty=1.0,
    no_repeat_ngram_size=0, encoder_no_repeat_ngram_size=0, min_new_tokens=0, bad_words_ids=None,
    sequence_bias=None, forced_bos_token_id=None, forced_eos_token_id=None, begin_suppress_tokens=None,
    exponential_decay_length_penalty=None, guidance_scale=None, min_p=None, top_h=None, typical_p=1.0,
    epsilon_cutoff=0.0, eta_cutoff=0.0, renormalize_logits=False, watermarking_config=None,
)


@dataclass
class SamplingParams:
    max_new_tokens: int = 32
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off

    @property
    def do_sample(self) -> bool:
        return self.temperature > 0


def draw(probs: torch.Tensor) -> torch.Tensor:
    """One index per row of ``probs`` (R, V), drawn from that row's distribution: inverse-CDF sampling, one
    uniform per row against the float64 running sum (exact up to float64 rounding; a zero-probability entry is never
    drawn). ``torch.multinomial`` draws the same distribution through V exponentials per row, about 13x the time
    on CPU for a 1k vocabulary (0.9 vs 0.07 ms for 32 rows, 15% of a tiny model's decoding step). Seeded by torch's
    RNG like it."""
    cdf = probs.double().cumsum(-1)  # (R, V)
    total = cdf[:, -1]  # (R,)
    bad = ~torch.isfinite(total) | (total <= 0)
    if bool(bad.any()):  # torch.multinomial refuses these too; a silent token would hide a diverged policy
        row = int(bad.nonzero()[0])
        raise ValueError(f"sampling: row {row} of the next-token probabilities sums to {float(total[row])} (NaN or "
                         "inf logits, or every token masked): the policy's logits are not finite, e.g. it diverged")
    u = torch.rand(len(cdf), 1, dtype=cdf.dtype, device=cdf.device) * cdf[:, -1:]  # (R, 1) in [0, total)
    return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_(max=cdf.shape[1] - 1)  # first cdf > u


class Sample(NamedTuple):
    """What ``HFEngine.sample`` returns for N = prompts x n rows."""

    ids: torch.Tensor  # (N, C) completion ids, padding after a sequence's end
    logprobs: torch.Tensor | None  # (N, C) float32, the sampler's log pi of each id, 0 after the end
    routing: torch.Tensor | None  # (N, P + C, L, k) the experts each MoE layer chose for every token (record_routing)


class RolloutEngine(Protocol):
    """What ``make_rollout`` needs of an engine; one that also has ``sample`` (``HFEngine.sample``: a ``Sample``)
    gives the rollout the sampler's log-probs and MoE routing too."""

    def generate(self, prompts: PromptBatch, params: SamplingParams) -> torch.Tensor:
        """Completion token ids (len(prompts), C), padded with pad_token_id after EOS."""


def _unwrap(model):
    return getattr(model, "module", model)


def _hf(model):
    """The Hugging Face model inside a (DDP-wrapped) ``PolicyModule``: the vision cache's owner."""
    model = _unwrap(model)
    return model.model if isinstance(model, PolicyModule) else model


class _StopWhen:
    """A ``generate`` stopping criterion: every sequence is done once ``stop()`` is true (a SIGTERM mid-rollout)."""

    def __init__(self, stop):
        self.stop = stop

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), bool(self.stop()), dtype=torch.bool, device=input_ids.device)


class HFEngine:
    """Sampling with a Hugging Face model, in chunks of ``batch_size`` sequences to bound memory. With ``stop`` (a
    callable), a stop request ends generation within one decoding step and raises ``Interrupted``.

    Qwen3-VL(-MoE) models are sampled by ``_decode``: each prompt is prefilled once and its KV cache expanded to its
    n completions, then tokens are drawn from the distribution ``generate(num_return_sequences=n)`` draws from
    (its own logits processors), by ``draw``; with ``torch.multinomial`` in its place the tokens are generate's,
    token for token, for the same seed (tested). Other models use ``generate`` itself.
    ``synced``: the model is sharded over ranks (FSDP2) and ``model`` is the FSDP ``PolicyModule``, whose ``call``
    (and ``generate``) gather the parameters; every rank runs as many decoding steps as the slowest, and the vision
    tower once per chunk, a blank image where it has none (text-only prompts), so the ranks' collectives pair up;
    the decoder layers' weights are gathered once per ``generate`` call, not per decoding step, as many as fit in
    the free GPU memory beside the call's own KV cache and logits (``parallel.kept_units``, ``generation_bytes``).
    Each new token runs through ``FusedDecoder`` (``sapo_vl.models.decode``: the same layers in fewer operations, KV
    cache written in place; logits equal to float rounding); sharded, only when every decoder layer is kept gathered,
    through the text model's layers otherwise.
    ``shared_prefill=False`` samples by ``generate`` and ``fused_decoding=False`` through the layer calls (the paths of
    other models and of sharded ones, both kept) on a model that needs neither, so tests and benchmarks compare them."""

    def __init__(self, model, processor, *, batch_size: int = 64, stop=None, synced: bool = False,
                 shared_prefill: bool = True, fused_decoding: bool = True, record_routing: bool = False):
        self.model, self.processor, self.batch_size, self.stop = model, processor, batch_size, stop
        self.synced, self.shared_prefill, self.fused_decoding = synced, shared_prefill, fused_decoding
        self.record_routing = record_routing
        tok = processor.tokenizer
        self.eos_id = tok.convert_tokens_to_ids("<|im_end|>")
        if self.eos_id is None or self.eos_id == tok.unk_token_id:
            self.eos_id = tok.eos_token_id
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else self.eos_id
        # also stop where the checkpoint says generation ends (Qwen3-VL: <|im_end|> and <|endoftext|>)
        configured = getattr(getattr(_unwrap(model), "generation_config", None), "eos_token_id", None)
        configured = [configured] if isinstance(configured, int) else list(configured or [])
        self.eos_ids = [self.eos_id] + [i for i in configured if i != self.eos_id]
        ids = [tok.convert_tokens_to_ids(t) for t in VISION_TOKENS]
        self.suppress = [i for i in ids if i is not None and i != tok.unk_token_id]

    def generate(self, prompts: PromptBatch, params: SamplingParams, n: int = 1,
                 vision: VisionCache | None = None) -> torch.Tensor:
        """``n`` completions of each prompt (rows: prompt 0 x n, prompt 1 x n, ...), ``batch_size`` sequences per
        ``generate`` call; each prompt's images are encoded once (into ``vision`` when given), not n times."""
        return self.sample(prompts, params, n, vision)[0]

    @torch.no_grad()
    def sample(self, prompts: PromptBatch, params: SamplingParams, n: int = 1,
               vision: VisionCache | None = None) -> Sample:
        """``generate``'s completion ids, with the sampler's log-probs of them: log softmax of the policy's logits /
        temperature over the whole vocabulary (before suppressed tokens, top-k and top-p: as ``policy_forward``
        computes log pi), and with ``record_routing`` the experts every MoE router chose for each prompt and
        completion token (the prefill's, and each fed token's: the last one is fed too, for its experts). Either is
        None where ``_decode`` did not sample (greedy; a model ``generate`` samples)."""
        model = _unwrap(self.model)
        # sharded: the decoder layers' weights gathered once for the call (as many as fit), not at every step
        reserve = generation_bytes(getattr(model, "model", model).config, min(self.batch_size, len(prompts) * n),
                                   prompts.input_ids.shape[1] + params.max_new_tokens,
                                   compute_dtype(model).itemsize) if self.synced else 0.0
        with gathered(kept_units(model, reserve) if self.synced else []):
            outs = self._chunks(model, prompts, params, n, vision)
        width = max(out.ids.shape[1] for out in outs)
        ids = torch.cat([F.pad(out.ids, (0, width - out.ids.shape[1]), value=self.pad_id) for out in outs])
        logprobs = None if any(out.logprobs is None for out in outs) else torch.cat(
            [F.pad(out.logprobs, (0, width - out.logprobs.shape[1])) for out in outs])
        routing = None if any(out.routing is None for out in outs) else torch.cat(  # (N, P + C, L, k)
            [F.pad(out.routing, (0, 0, 0, 0, 0, width - out.ids.shape[1])) for out in outs])
        return Sample(ids, logprobs, routing)

    def _chunks(self, model, prompts: PromptBatch, params: SamplingParams, n: int,
                vision: VisionCache | None) -> list[Sample]:
        device = next(model.parameters()).device
        shared = self.shared_prefill and _hf(model).config.model_type in PACKED_MODELS
        outs = []
        per_call = max(1, self.batch_size // n)
        for start in range(0, len(prompts), per_call):
            chunk = prompts.select(list(range(start, min(start + per_call, len(prompts)))))
            copies = n if params.do_sample else 1  # greedy: the n completions are one, repeated below
            if shared:
                args = (to_device(chunk.model_inputs(keyed=True), device), params, copies, vision)
                # sharded (FSDP2): inside the policy module, whose ``call`` gathers the weights
                out = model.call(self._sample, *args) if self.synced else self._sample(_hf(model), *args)
                outs.append(Sample(*(None if t is None else t.cpu().repeat_interleave(n // copies, 0) for t in out)))
                continue
            # sharded: only generate() gathers the weights, so the model encodes the images itself (every copy)
            inputs = to_device(chunk.model_inputs(keyed=not self.synced), device)
            inputs.update(encoder_inputs(_hf(model), inputs, vision))
            kwargs = dict(NEUTRAL_GENERATION, max_new_tokens=params.max_new_tokens, do_sample=params.do_sample,
                          eos_token_id=self.eos_ids, pad_token_id=self.pad_id, num_return_sequences=copies,
                          suppress_tokens=self.suppress or None, use_cache=True, synced_gpus=self.synced)
            if params.do_sample:
                kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k)
            if self.stop is not None:
                kwargs["stopping_criteria"] = StoppingCriteriaList([_StopWhen(self.stop)])
            seq = model.generate(**inputs, **kwargs)
            if self.stop is not None and self.stop():
                raise Interrupted("stop requested during generation")
            ids = seq[:, inputs["input_ids"].shape[1]:].cpu().repeat_interleave(n // copies, dim=0)
            outs.append(Sample(ids, None, None))
        return outs

    def _sample(self, model, inputs: dict, params: SamplingParams, n: int, vision: VisionCache | None):
        """Each prompt's images encoded once (into ``vision``), then ``_decode``. Synced, a rank with no image to
        encode runs the vision tower on a blank image, so every rank runs its collectives."""
        inputs = dict(inputs)
        with every_rank_encodes(self.synced):
            inputs.update(encoder_inputs(model, inputs, vision))
        return self._decode(model, inputs, params, n)

    def _decode(self, model, inputs: dict, params: SamplingParams, n: int) -> Sample:
        """(B * n, C) completion ids of the B prompts in ``inputs``, rows prompt 0 x n, prompt 1 x n, ..., their
        log-probs and routing (``sample``): one prefill per prompt, its KV cache repeated n times, then
        ``generate``'s sampling loop. Positions are ``generate``'s: 4 rows (the text position, from the attention
        mask, and the 3-D M-RoPE rows of ``get_rope_index``), each advanced by one per new token. Synced, every rank
        decodes until all are done (or any was asked to stop)."""
        # greedy (evaluation) needs no experts: training rollouts sample
        with recorded_calls(model) if self.record_routing and params.do_sample else nullcontext([]) as calls:
            ids, logprobs = self._loop(model, inputs, params, n, recording=bool(calls))
        if not calls:
            return Sample(ids, logprobs, None)
        B = inputs["input_ids"].shape[0]  # per layer: the prefill's (B * P, k), then a (B * n, k) per fed token
        layers = [torch.cat([c[0].view(B, -1, c[0].shape[-1]).repeat_interleave(n, 0), torch.stack(c[1:], 1)], 1)
                  for c in calls]
        return Sample(ids, logprobs, torch.stack(layers, 2))  # (B * n, P + C, L, k)

    def _loop(self, model, inputs: dict, params: SamplingParams, n: int, recording: bool):
        """``_decode``'s prefill and sampling loop: (ids, log-probs or None); ``recording``: the last token is fed
        too (its logits unused), so its experts are recorded."""
        position = position_ids(model, inputs)  # (4, B, P)
        cache, cache_key = DynamicCache(config=model.config), cache_kwarg(model)
        out = model(**inputs, position_ids=position, use_cache=True, logits_to_keep=1, **{cache_key: cache})
        logits = out.logits[:, -1].float().repeat_interleave(n, 0)  # (B * n, V)
        # each new token is text: the decoder and the head alone, without the multimodal wrapper's per-call work
        fused = self.fused_decoding and fused_decoding_supported(model)  # sharded: only with every layer kept gathered
        feed = (FusedDecoder if fused else LayerDecoder)(model, cache, inputs["attention_mask"], position[..., -1:],
                                                         n, params.max_new_tokens - 1 + recording)
        # generate's SuppressTokensLogitsProcessor, its mask built once
        suppressed = torch.zeros(logits.shape[1], dtype=torch.bool, device=logits.device)
        suppressed[[i for i in self.suppress if i < len(suppressed)]] = True
        processors = LogitsProcessorList(
            ([TemperatureLogitsWarper(params.temperature)] if params.do_sample and params.temperature != 1.0 else [])
            + ([TopKLogitsWarper(params.top_k)] if params.do_sample and params.top_k else [])
            + ([TopPLogitsWarper(params.top_p)] if params.do_sample and params.top_p < 1.0 else []))
        eos = torch.tensor(self.eos_ids, device=logits.device)
        done = torch.zeros(len(logits), dtype=torch.bool, device=logits.device)
        tokens, logprobs = [], []
        for step in range(params.max_new_tokens):
            scores = processors(None, logits.masked_fill(suppressed, -float("inf")))
            if params.do_sample:
                token = draw(torch.softmax(scores, dim=-1))  # (B * n,)
                # log pi(token), as policy_forward computes it (log_softmax: one kernel; logsumexp is several)
                tempered = scale_logits(logits, 1.0 / params.temperature)
                logp = torch.log_softmax(tempered, -1).gather(1, token[:, None])[:, 0]  # (B * n,)
                logprobs.append(logp.masked_fill(done, 0))
            else:
                token = scores.argmax(-1)
            token = token.masked_fill(done, self.pad_id)  # a finished sequence gets padding, as in generate
            tokens.append(token)
            done |= torch.isin(token, eos)
            stopping = self.stop is not None and bool(self.stop())
            running = not bool(done.all())
            if self.synced:  # any rank still running keeps every rank decoding; a stop on one rank stops all
                flags = torch.tensor([running, stopping], dtype=torch.int32, device=logits.device)
                torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
                running, stopping = bool(flags[0]), bool(flags[1])
            if stopping:
                raise Interrupted("stop requested during generation")
            last = not running or step == params.max_new_tokens - 1
            if last and not recording:
                break
            logits = feed(token)  # recording: the last token too, for the experts it is routed to
            if last:
                break
        return torch.stack(tokens, 1), torch.stack(logprobs, 1) if logprobs else None


def response_mask_from_ids(completion_ids: torch.Tensor, eos_id: int | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask up to and including the first EOS (any of the ids), and truncation flags (no EOS). ids: (N, C)."""
    is_eos = torch.isin(completion_ids, torch.as_tensor(eos_id).reshape(-1))  # (N, C)
    has_eos = is_eos.any(1)  # (N,)
    first = torch.where(has_eos, is_eos.int().argmax(1), torch.full_like(has_eos, completion_ids.shape[1],
                                                                            dtype=torch.long))
    positions = torch.arange(completion_ids.shape[1])[None]  # (1, C)
    mask = (positions <= first[:, None]).long()  # (N, C)
    return mask, ~has_eos


def generation_bytes(config, sequences: int, tokens: int, itemsize: int) -> float:
    """What one generation call allocates on the device beside the weights: the KV cache of ``sequences`` sequences
    of ``tokens`` tokens (keys and values of every text layer, ``itemsize`` bytes each: the compute dtype) and two
    fp32 rows of logits per sequence (the sampler's logits and their log-softmax)."""
    text = config.get_text_config()
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    kv = 2 * text.num_hidden_layers * text.num_key_value_heads * head_dim * itemsize
    return sequences * (tokens * kv + 2 * text.vocab_size * 4)


@torch.no_grad()
def score_rollout(model, rollout: Rollout, *, temperature: float, micro_batch_size: int, chunk_size: int = 1024,
                  packed: bool = False, share: str = "off", inputs=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (N, C) of the rollout's completions under ``model``, micro-batched, and for an MoE model the
    expert ids every router chose for every token (N, P + C, L, k), recorded for drift metrics and routing replay.
    ``model``: a Hugging Face model or a ``PolicyModule`` (under FSDP2, the sharded one: its forward gathers).
    Images come from the rollout's vision cache when ``model`` is the policy that made it (not a reference).
    ``packed``, ``share`` (auto | always | off): padding-free packed forwards and shared-prefix forwards where they
    apply, as the update's (the same computation on both sides of the ratio). ``inputs(micro)``, where given (the
    update's), replaces them: it returns ((inputs, P, layout), routing to replay or None); the recorded experts are
    then the replayed ones."""
    N, C = rollout.completion_ids.shape
    P = rollout.prompt_len
    logprobs = torch.zeros(N, C)
    recorded = None
    policy = _unwrap(model) if isinstance(_unwrap(model), PolicyModule) else PolicyModule(_unwrap(model))
    device = next(policy.parameters()).device
    for start in range(0, N, micro_batch_size):
        idx = list(range(start, min(start + micro_batch_size, N)))
        mb = rollout.select(idx)
        if inputs is None:
            batch, replay = forward_inputs(policy.model, mb, packed, share), None
        else:
            batch, replay = inputs(mb)
        model_inputs, P_mb, packing = batch
        (p0, c1), n = mb.span(), len(idx)
        with routing(policy, replay) as used:
            out = policy(to_device(model_inputs, device), P_mb, temperature=temperature, chunk_size=chunk_size,
                         vision=rollout.vision, packing=packing)
        width = out.logprobs.shape[1]
        logprobs[start:start + n, :width] = out.logprobs.float().cpu()
        if used and used[0] is not None:
            used = used if packing is None else [packing.to_padded(u) for u in used]  # (n * T', k) each
            ids = torch.stack([u.view(n, -1, u.shape[-1]) for u in used], dim=2).cpu()  # (n, T', L, k)
            if recorded is None:
                num_experts = policy.model.config.text_config.num_experts
                recorded = torch.zeros(N, P + C, ids.shape[2], ids.shape[3], dtype=routing_dtype(num_experts))
            recorded[start:start + n, p0:P + c1] = ids.to(recorded.dtype)
    return logprobs, recorded


def make_rollout(engine, fmt: PromptFormat, records: list[dict], group_size: int, params: SamplingParams) -> Rollout:
    """Collate ``records`` once and sample ``group_size`` completions each, each image encoded once (the rollout's
    ``vision`` cache serves its later no-grad forwards too). ``old_logprobs`` and ``routing``: the sampler's
    log-probs and recorded experts where the engine gives them (``HFEngine.sample``), else None; whether they serve
    as pi_old's or the policy scores the rollout (``score_rollout``) is the trainer's choice
    (``sapo_vl.update.PolicyUpdate.old_logprobs_source``)."""
    unique = collate_prompts(fmt, records)
    vision = VisionCache()
    if hasattr(engine, "sample"):
        completion_ids, logprobs, routing = engine.sample(unique, params, group_size, vision)
    else:
        completion_ids, logprobs, routing = engine.generate(unique, params, group_size, vision), None, None
    prompts = unique.repeat(group_size)
    mask, truncated = response_mask_from_ids(completion_ids, getattr(engine, "eos_ids", engine.eos_id))
    completion_ids = torch.where(mask.bool(), completion_ids, torch.full_like(completion_ids, engine.pad_id))
    texts = fmt.processor.tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    return Rollout(
        prompt_ids=prompts.input_ids, prompt_mask=prompts.attention_mask, prompt_mm_types=prompts.mm_token_type_ids,
        completion_ids=completion_ids, response_mask=mask, truncated=truncated,
        group_ids=torch.arange(len(records)).repeat_interleave(group_size),
        pixel_values=prompts.pixel_values, image_grid_thw=prompts.image_grid_thw,
        images_per_sample=prompts.images_per_sample, records=prompts.records, completions=texts,
        image_keys=prompts.image_keys, vision=vision,
        old_logprobs=logprobs, routing=routing,
    )


def generate_completions(engine, fmt: PromptFormat, records: list[dict], params: SamplingParams,
                         n: int = 1) -> list[list[str]]:
    """n completions (text) per record through the same collate + engine as training, ``engine.batch_size``
    sequences at a time. ``params.temperature`` 0 = greedy. Seed torch's RNG before for reproducible samples."""
    per_call = max(1, engine.batch_size // max(n, 1))
    results: list[list[str]] = []
    for start in range(0, len(records), per_call):  # collate per chunk: only its images are decoded into pixels
        chunk = records[start:start + per_call]
        ro = make_rollout(engine, fmt, chunk, n, params)
        results.extend(ro.completions[i * n:(i + 1) * n] for i in range(len(chunk)))
    return results
