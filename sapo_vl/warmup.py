"""Supervised warm-up before RL: teach the answer format, optionally without the answer.

A randomly initialised policy almost never emits a whole valid answer (one of ~1k tokens, then EOS), so RL has no
signal to start from. ``labels="shuffled"`` trains on targets drawn from the dataset's answer set independently
of the prompt: the policy learns to answer with one valid answer and stop, while its accuracy stays at chance.
Everything above chance afterwards is learned by RL. ``labels="gold"`` is plain SFT on the records' answers
(a cold start for real models).
"""

from __future__ import annotations

import random

import torch

from sapo_vl.errors import Interrupted
from sapo_vl.models.logprobs import PolicyModule
from sapo_vl.rollout.collate import PromptFormat, collate_prompts
from sapo_vl.rollout.types import Rollout, to_device
from sapo_vl.update import fused_adamw


def _first_answer(record: dict) -> str | None:
    a = record.get("answer")
    a = a[0] if isinstance(a, (list, tuple)) and a else a
    return None if a is None or isinstance(a, (list, tuple)) else str(a)


def answer_pool(records: list[dict]) -> list[str]:
    """The distinct answers (first acceptable answer of each record; records without one are left out), sorted."""
    return sorted({a for a in map(_first_answer, records) if a is not None})


def supervised_batch(fmt: PromptFormat, records: list[dict], targets: list[str]) -> Rollout:
    """A Rollout whose completions are ``targets`` + EOS (for a teacher-forced forward)."""
    tok = fmt.processor.tokenizer
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    prompts = collate_prompts(fmt, records)
    ids = [tok(t, add_special_tokens=False)["input_ids"] + [eos] for t in targets]
    width = max(len(x) for x in ids)
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    completion = torch.full((len(ids), width), pad, dtype=torch.long)  # (B, C)
    mask = torch.zeros(len(ids), width, dtype=torch.long)  # (B, C)
    for i, x in enumerate(ids):
        completion[i, :len(x)] = torch.tensor(x)
        mask[i, :len(x)] = 1
    return Rollout(prompt_ids=prompts.input_ids, prompt_mask=prompts.attention_mask,
                   prompt_mm_types=prompts.mm_token_type_ids, completion_ids=completion, response_mask=mask,
                   truncated=torch.zeros(len(ids), dtype=torch.bool), group_ids=torch.arange(len(ids)),
                   pixel_values=prompts.pixel_values, image_grid_thw=prompts.image_grid_thw,
                   images_per_sample=prompts.images_per_sample, records=list(records), completions=list(targets),
                   image_keys=prompts.image_keys)


def warmup(model, fmt: PromptFormat, records: list[dict], cfg, seed: int = 0, log=None, stop=None) -> list[float]:
    """Teacher-forced next-token training on (prompt, target + EOS) for ``cfg.steps`` steps (``cfg``: the
    ``warmup`` config section: steps, batch_size, lr, labels). ``model``: a Hugging Face model, or the trainer's
    prepared policy (DDP, or FSDP2 shards: every rank draws the same batches from ``seed``, so they run the same
    collectives and end with the same weights). Returns the losses. ``stop()`` true between two steps raises
    ``Interrupted``."""
    steps, batch_size, labels = cfg.steps, cfg.batch_size, cfg.labels
    rng = random.Random(seed)
    pool = answer_pool(records)
    if not pool:
        raise ValueError("warm-up needs records with answers; none of the given records has one")
    missing = [r.get("id", i) for i, r in enumerate(records) if _first_answer(r) is None]
    if labels == "gold" and missing:
        raise ValueError(f"warm-up with gold labels: {len(missing)} record(s) have no answer, e.g. {missing[:3]}")
    policy = model if isinstance(getattr(model, "module", model), PolicyModule) else PolicyModule(model)
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0, **fused_adamw(params))
    device = next(model.parameters()).device
    policy.train()
    losses = []
    for step in range(steps):
        if stop is not None and stop():
            raise Interrupted(f"stop requested during the warm-up (step {step} of {steps})")
        batch = rng.sample(records, min(batch_size, len(records)))
        if labels == "shuffled":
            targets = [rng.choice(pool) for _ in batch]
        else:
            targets = [_first_answer(r) for r in batch]
        sb = supervised_batch(fmt, batch, targets)
        inputs, P = sb.model_inputs()
        out = policy(to_device(inputs, device), P)
        mask = sb.response_mask[:, :out.logprobs.shape[1]].to(device).bool()
        loss = -torch.where(mask, out.logprobs, 0.0).sum() / mask.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if log is not None and (step == 0 or (step + 1) % max(1, steps // 5) == 0):
            log(f"[sapo-vl] warm-up step {step + 1}/{steps}: loss {loss.item():.3f}")
    return losses
