"""Rollout: G sampled completions per prompt, old log-probs and MoE routing, as one ``Rollout`` batch.

The engine interface is small (``RolloutEngine.generate``) so that a vLLM engine can stand beside the Hugging Face
one. Whatever samples the tokens, the old log-probs are recomputed by ``policy_forward``, the very function the
update uses, so the importance ratio is exactly 1 at the first update step (no train/rollout mismatch from
different kernels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from transformers import StoppingCriteriaList

from sapo_vl.errors import Interrupted
from sapo_vl.models.logprobs import PolicyModule
from sapo_vl.models.moe import completion_topk
from sapo_vl.rollout.collate import PromptFormat, collate_prompts
from sapo_vl.rollout.types import PromptBatch, Rollout

VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
# Whatever else a checkpoint's generation_config.json switches on (Qwen2.5-VL ships repetition_penalty 1.05) is
# switched off: the sampling distribution must stay softmax(logits / T), up to top-k / top-p, which is what
# ``score_rollout`` scores. transformers fills every generate() argument left unset from the model's config.
NEUTRAL_GENERATION = dict(
    num_beams=1, num_return_sequences=1, repetition_penalty=1.0, encoder_repetition_penalty=1.0,
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


class RolloutEngine(Protocol):
    def generate(self, prompts: PromptBatch, params: SamplingParams) -> torch.Tensor:
        """Completion token ids (len(prompts), C), padded with pad_token_id after EOS."""


def _unwrap(model):
    return getattr(model, "module", model)


class _StopWhen:
    """A ``generate`` stopping criterion: every sequence is done once ``stop()`` is true (a SIGTERM mid-rollout)."""

    def __init__(self, stop):
        self.stop = stop

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), bool(self.stop()), dtype=torch.bool, device=input_ids.device)


class HFEngine:
    """Sampling with Hugging Face ``generate``, in chunks of ``batch_size`` sequences to bound memory. With
    ``stop`` (a callable), a stop request ends generation within one decoding step and raises ``Interrupted``.
    ``synced``: the model is sharded over ranks (FSDP2), so every rank runs as many decoding steps as the slowest
    (``synced_gpus``); ``model`` is then the FSDP ``PolicyModule``, whose ``generate`` gathers the parameters."""

    def __init__(self, model, processor, *, batch_size: int = 64, stop=None, synced: bool = False):
        self.model, self.processor, self.batch_size, self.stop = model, processor, batch_size, stop
        self.synced = synced
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

    @torch.no_grad()
    def generate(self, prompts: PromptBatch, params: SamplingParams) -> torch.Tensor:
        model = _unwrap(self.model)
        device = next(model.parameters()).device
        outs = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = prompts.select(list(range(start, min(start + self.batch_size, len(prompts)))))
            inputs = {k: v.to(device) for k, v in chunk.model_inputs().items()}
            kwargs = dict(NEUTRAL_GENERATION, max_new_tokens=params.max_new_tokens, do_sample=params.do_sample,
                          eos_token_id=self.eos_ids, pad_token_id=self.pad_id,
                          suppress_tokens=self.suppress or None, use_cache=True, synced_gpus=self.synced)
            if params.do_sample:
                kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k)
            if self.stop is not None:
                kwargs["stopping_criteria"] = StoppingCriteriaList([_StopWhen(self.stop)])
            seq = model.generate(**inputs, **kwargs)
            if self.stop is not None and self.stop():
                raise Interrupted("stop requested during generation")
            outs.append(seq[:, inputs["input_ids"].shape[1]:].cpu())
        width = max(o.shape[1] for o in outs)
        return torch.cat([torch.nn.functional.pad(o, (0, width - o.shape[1]), value=self.pad_id) for o in outs])


def response_mask_from_ids(completion_ids: torch.Tensor, eos_id: int | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask up to and including the first EOS (any of the ids), and truncation flags (no EOS). ids: (N, C)."""
    is_eos = torch.isin(completion_ids, torch.as_tensor(eos_id).reshape(-1))  # (N, C)
    has_eos = is_eos.any(1)  # (N,)
    first = torch.where(has_eos, is_eos.int().argmax(1), torch.full_like(has_eos, completion_ids.shape[1],
                                                                            dtype=torch.long))
    positions = torch.arange(completion_ids.shape[1])[None]  # (1, C)
    mask = (positions <= first[:, None]).long()  # (N, C)
    return mask, ~has_eos


@torch.no_grad()
def score_rollout(model, rollout: Rollout, *, temperature: float, micro_batch_size: int, chunk_size: int = 1024,
                  top_k_experts: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (N, C) of the rollout's completions under ``model`` (and MoE top-k routing), micro-batched.
    ``model``: a Hugging Face model or a ``PolicyModule`` (under FSDP2, the sharded one: its forward gathers)."""
    N, C = rollout.completion_ids.shape
    logprobs = torch.zeros(N, C)
    topk = None
    policy = _unwrap(model) if isinstance(_unwrap(model), PolicyModule) else PolicyModule(_unwrap(model))
    device = next(policy.parameters()).device
    for start in range(0, N, micro_batch_size):
        idx = list(range(start, min(start + micro_batch_size, N)))
        mb = rollout.select(idx)
        inputs, P = mb.model_inputs()
        inputs = {k: v.to(device) for k, v in inputs.items()}
        out = policy(inputs, P, temperature=temperature, chunk_size=chunk_size)
        width = out.logprobs.shape[1]
        logprobs[start:start + len(idx), :width] = out.logprobs.float().cpu()
        if out.router_logits is not None and top_k_experts:
            t = completion_topk(out.router_logits, len(idx), P, top_k_experts).cpu()  # (n, width, L, k)
            if topk is None:
                topk = torch.zeros(N, C, t.shape[2], t.shape[3], dtype=t.dtype)
            topk[start:start + len(idx), :width] = t
    return logprobs, topk


def make_rollout(engine, fmt: PromptFormat, records: list[dict], group_size: int, params: SamplingParams) -> Rollout:
    """Collate ``records`` once and sample ``group_size`` completions each. The old log-probs are
    ``score_rollout``'s, the one place they are computed."""
    prompts = collate_prompts(fmt, records).repeat(group_size)
    completion_ids = engine.generate(prompts, params)  # (N, C)
    mask, truncated = response_mask_from_ids(completion_ids, getattr(engine, "eos_ids", engine.eos_id))
    completion_ids = torch.where(mask.bool(), completion_ids, torch.full_like(completion_ids, engine.pad_id))
    texts = fmt.processor.tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    return Rollout(
        prompt_ids=prompts.input_ids, prompt_mask=prompts.attention_mask, prompt_mm_types=prompts.mm_token_type_ids,
        completion_ids=completion_ids, response_mask=mask, truncated=truncated,
        group_ids=torch.arange(len(records)).repeat_interleave(group_size),
        pixel_values=prompts.pixel_values, image_grid_thw=prompts.image_grid_thw,
        images_per_sample=prompts.images_per_sample, records=prompts.records, completions=texts,
    )


def generate_completions(engine, fmt: PromptFormat, records: list[dict], params: SamplingParams,
                         n: int = 1) -> list[list[str]]:
    """n completions (text) per record through the same collate + engine as training, ``engine.batch_size``
    sequences at a time. ``params.temperature`` 0 = greedy. Seed torch's RNG before for reproducible samples."""
    per_call = max(1, engine.batch_size // max(n, 1))
    results: list[list[str]] = []
    for start in range(0, len(records), per_call):
        chunk = records[start:start + per_call]
        ro = make_rollout(engine, fmt, chunk, n, params)
        results.extend(ro.completions[i * n:(i + 1) * n] for i in range(len(chunk)))
    return results
