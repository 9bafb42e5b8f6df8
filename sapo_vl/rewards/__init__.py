"""Verifiable rewards shared by training and evaluation.

``REWARDS`` (a :class:`sapo_vl.registry.Registry`) maps a name to a TRL reward function, called as TRL calls it
(``registry.call_reward``) and returning ``list[float | None]`` (``None`` = not applicable to that sample). The
built-in ones are :class:`Verifier` objects, which also ``extract(completion_text, /, **row)`` the answer they grade:

- ``"math"``: final answer equivalence through math-verify (:mod:`sapo_vl.rewards.math`)
- ``"mcq"``: multiple-choice letter (:func:`sapo_vl.rewards.vqa.mcq_reward`)
- ``"vqa"``: free-form visual QA metrics (:func:`sapo_vl.rewards.vqa.vqa_reward`)
- ``"ordered_words"`` / ``"ordered_words_partial"``: a list answer's words in order, all or the fraction in place
- ``"format"`` / ``"format_lenient"``: ``<think>``/``<answer>`` output format (:mod:`sapo_vl.rewards.format`)
- ``"code"``: program execution in a sandbox (:mod:`sapo_vl.rewards.code`, imported on first use)
- ``"auto"``: routes each sample to the reward named by its ``reward`` (or ``verifier``) column (a plain function)
"""

from sapo_vl.rewards.format import format_reward, format_reward_lenient
from sapo_vl.rewards.math import extract_answer, math_equal, math_reward
from sapo_vl.rewards.registry import (
    REWARDS,
    CombinedReward,
    RewardBreakdown,
    combine_rewards,
    register_reward,
)
from sapo_vl.rewards.verifier import Verifier
from sapo_vl.rewards.vqa import extract_choice, mcq_reward, vqa_reward

__all__ = [
    "REWARDS",
    "CombinedReward",
    "RewardBreakdown",
    "Verifier",
    "combine_rewards",
    "extract_answer",
    "extract_choice",
    "format_reward",
    "format_reward_lenient",
    "math_equal",
    "math_reward",
    "mcq_reward",
    "register_reward",
    "vqa_reward",
]
