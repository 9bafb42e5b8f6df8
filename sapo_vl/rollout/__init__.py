"""Rollout: collate image-text prompts once, sample G completions per prompt, score old log-probs."""

from sapo_vl.rollout.collate import CollateError, PromptFormat, build_messages, collate_prompts, count_prompt_tokens
from sapo_vl.rollout.generate import (
    HFEngine,
    SamplingParams,
    generate_completions,
    make_rollout,
    response_mask_from_ids,
    score_rollout,
)
from sapo_vl.rollout.types import PromptBatch, Rollout

__all__ = ["CollateError", "PromptFormat", "build_messages", "collate_prompts", "count_prompt_tokens", "HFEngine",
           "SamplingParams", "generate_completions", "make_rollout", "response_mask_from_ids", "score_rollout",
           "PromptBatch", "Rollout"]
