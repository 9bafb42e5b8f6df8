"""Scoring: completions -> rewards -> verdicts, through the same verifiers training uses (``sapo_vl.rewards``).

A task's reward is its evaluation (nanochat's rule): the harness calls ``REWARDS[name](completions, answer=...,
**columns, **kwargs)`` -- the TRL reward contract -- and a completion is correct when its reward is at least the
task's threshold (1.0 by default). ``None`` (not applicable) is never correct; a doc whose completions are all
``None`` is reported as ``not_applicable`` and left out of the metrics.

A task with an ``official:`` metric (:mod:`sapo_vl.evaluation.official`) also gets that metric per completion
(``official``), read from the same completions by the benchmark's own rules: the number to compare with papers.

For the per-sample output, a verifier's own ``extract(completion_text, **record, **kwargs)``
(:class:`sapo_vl.rewards.verifier.Verifier`) gives the answer it read from a completion, so what the log shows is
what was graded; maj@n votes on those answers when the verifier is ``votable``. A plain reward function has no
``extract``: its answers are ``None`` and it gets no maj@n.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sapo_vl.chat import reward_completions, reward_prompt
from sapo_vl.errors import UnknownNameError, UserError
from sapo_vl.evaluation.metrics import majority_vote
from sapo_vl.evaluation.official import OFFICIAL, official_scores
from sapo_vl.rewards import REWARDS
from sapo_vl.rewards.registry import call_reward


class ScoringError(UserError, RuntimeError):
    """A verifier failed or broke its contract on a doc (or no reward has its name)."""


def prompt_hash(prompt: Any) -> str:
    return hashlib.sha256(json.dumps(prompt, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]


def _status(rewards: list) -> str:
    if all(r is None for r in rewards):
        return "not_applicable"
    return "partial" if any(r is None for r in rewards) else "scored"


def _call_verifier(name: str, completions: list[str], columns: dict[str, list], kwargs: dict, where: str) -> list:
    """``REWARDS[name]`` called as training calls it (TRL's keyword arguments, taking those it accepts); a samples
    file has no token ids, so ``completion_ids`` is None."""
    try:
        fn = REWARDS[name]
    except UnknownNameError as exc:
        raise ScoringError(f"{where}: {exc}") from None
    prompts = columns.pop("prompts")
    call = {**columns, **kwargs, "prompts": prompts, "completion_ids": None, "trainer_state": None,
            "log_metric": lambda *_: None, "log_extra": lambda *_: None,
            "completions": reward_completions(completions, prompts)}
    try:
        return call_reward(name, fn, call)
    except Exception as exc:
        raise ScoringError(f"{where}: verifier {name!r} raised {type(exc).__name__}: {exc}") from exc


def score_docs(
    records: list[dict],
    completions: list[list[str]],
    *,
    task: str,
    columns: list[str],
    kwargs: dict[str, Any],
    threshold: float,
    official: str | None = None,
) -> list[dict[str, Any]]:
    """Score several docs: one verifier call per verifier name over all their completions (verifiers batch
    their work across a call), then split back into one row per doc; ``official`` names the task's official
    metric, scored per completion when it is one of :data:`~sapo_vl.evaluation.official.OFFICIAL`."""
    if len(records) != len(completions):
        raise ValueError(f"score_docs: {len(records)} records but {len(completions)} completion lists")
    by_name: dict[str, list[int]] = {}
    for i, rec in enumerate(records):
        by_name.setdefault(rec["reward"], []).append(i)
    rewards_of: dict[int, list] = {}
    for name, idx in by_name.items():
        flat = [c for i in idx for c in completions[i]]
        cols = {"answer": [records[i]["answer"] for i in idx for _ in completions[i]],
                "prompts": [reward_prompt(records[i]) for i in idx for _ in completions[i]]}
        for col in columns:
            cols[col] = [records[i][col] for i in idx for _ in completions[i]]
        where = f"task {task} docs {[records[i]['id'] for i in idx][:5]}"
        flat_rewards = _call_verifier(name, flat, cols, kwargs, where)
        pos = 0
        for i in idx:
            rewards_of[i] = flat_rewards[pos: pos + len(completions[i])]
            pos += len(completions[i])
    rows = [_row(task, rec, comps, rewards_of[i], threshold, kwargs) for i, (rec, comps)
            in enumerate(zip(records, completions))]
    if official in OFFICIAL:
        for row, rec, comps in zip(rows, records, completions):
            try:
                row["official"] = official_scores(official, comps, rec)
            except (TypeError, ValueError) as exc:
                raise ScoringError(f"task {task} doc {rec['id']}: official metric {official!r}: {exc}") from exc
    return rows


def _row(task: str, record: dict, comps: list[str], rewards: list, threshold: float, kwargs: dict) -> dict[str, Any]:
    verdicts = [r is not None and float(r) >= threshold for r in rewards]
    given = [float(r) for r in rewards if r is not None]
    verifier = REWARDS[record["reward"]]
    extract = getattr(verifier, "extract", None)
    extracted = [extract(c, **{**record, **kwargs}) if extract else None for c in comps]
    return {
        "doc_id": record["id"],
        "task_name": task,
        "target": record["answer"],
        "verifier": record["reward"],
        "resps": comps,
        "filtered_resps": extracted,
        "rewards": [None if r is None else float(r) for r in rewards],
        "verdicts": verdicts,
        "n": len(comps),
        "n_correct": sum(verdicts),
        "reward_mean": sum(given) / len(given) if given else None,
        "maj_correct": (majority_vote(extracted, verdicts)
                        if len(comps) > 1 and getattr(verifier, "votable", False) else None),
        "status": _status(rewards),
        "prompt_hash": prompt_hash(record["prompt"]),
    }
