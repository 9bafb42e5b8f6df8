"""Evaluation metrics: the unbiased pass@k estimator, Pass@1, majority voting, and per-task aggregation.

pass@k follows Chen et al. 2021, "Evaluating Large Language Models Trained on Code" (the Codex paper, eq. 1):
draw n >= k samples per problem, count the c correct ones, and estimate

    pass@k = E_problems[ 1 - C(n - c, k) / C(n, k) ]

C(n - c, k) / C(n, k) is computed as the product prod_{i = n-c+1}^{n} (1 - k / i), which never forms the huge
binomials and so stays exact to float precision for any n.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with ``n`` samples of which ``c`` are correct (Chen et al. 2021, eq. 1).

    Returns ``1 - C(n-c, k) / C(n, k)``. Requires integers with ``0 <= c <= n`` and ``1 <= k <= n``.
    """
    for name, value in (("n", n), ("c", c), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"pass_at_k: {name} must be an int, got {type(value).__name__} {value!r}")
    if n < 1:
        raise ValueError(f"pass_at_k: need at least one sample, got n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 1 <= k <= n (k samples drawn from n), got k={k}, n={n}")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k/i)
    fail_all = 1.0
    for i in range(n - c + 1, n + 1):
        fail_all *= 1.0 - k / i
    return 1.0 - fail_all


def mean_pass_at_k(counts: Sequence[tuple[int, int]], k: int) -> float:
    """Mean of :func:`pass_at_k` over problems given as ``(n, c)`` pairs."""
    if not counts:
        raise ValueError("mean_pass_at_k: no problems to average over")
    return sum(pass_at_k(n, c, k) for n, c in counts) / len(counts)


def mean_with_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean over problems and its standard error: sample standard deviation / sqrt(#problems), 0.0 for one."""
    if not values:
        raise ValueError("mean_with_stderr: no problems to average over")
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var / len(values))


def pass1_with_stderr(counts: Sequence[tuple[int, int]]) -> tuple[float, float]:
    """Pass@1 as the mean over problems of c/n, with the standard error of that mean across problems."""
    if not counts:
        raise ValueError("pass1_with_stderr: no problems to average over")
    return mean_with_stderr([c / n for n, c in counts])


def majority_vote(answers: Sequence[str | None], verdicts: Sequence[bool]) -> bool:
    """maj@n for one problem: is the most frequent extracted answer a correct one?

    ``None`` answers (nothing extracted) take no part in the vote; with no answer at all the problem counts as
    wrong. Ties go to the answer that appears first. The winning answer's verdict is read from the first
    sample that produced it, so the verifier stays the single judge of correctness.
    """
    if len(answers) != len(verdicts):
        raise ValueError(f"majority_vote: {len(answers)} answers but {len(verdicts)} verdicts")
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return False
    best = max(votes.values())
    winner = next(a for a in answers if a is not None and votes[a] == best)
    return bool(verdicts[answers.index(winner)])


def reportable_ks(ks: Sequence[int], min_n: int) -> list[int]:
    """The k values that can be reported: pass@k needs k <= n for every problem, so k <= the smallest n."""
    return sorted({k for k in ks if 1 <= k <= min_n})


def task_metrics(
    counts: Sequence[tuple[int, int]],
    ks: Sequence[int],
    majority: Sequence[bool] | None = None,
    reward_means: Sequence[float] | None = None,
) -> dict[str, float]:
    """Aggregate one task: ``pass@1`` (mean c/n) and its stderr, ``pass@k`` for every reportable k > 1,
    ``maj@n`` when majority verdicts are given and every problem has the same n > 1, and ``reward_mean`` (the
    mean over problems of the mean reward: the benchmark score for graded metrics such as ANLS) when given.

    ``counts`` holds one ``(n, c)`` per problem. Keys are plain metric names (``"pass@1"``, ``"pass@1_stderr"``,
    ``"pass@4"``, ``"maj@8"``).
    """
    if not counts:
        raise ValueError("task_metrics: no scored problems")
    p1, se = pass1_with_stderr(counts)
    out: dict[str, float] = {"pass@1": p1, "pass@1_stderr": se}
    min_n = min(n for n, _ in counts)
    for k in reportable_ks(ks, min_n):
        if k > 1:
            out[f"pass@{k}"] = mean_pass_at_k(counts, k)
    ns = {n for n, _ in counts}
    if majority is not None and len(ns) == 1 and min_n > 1:
        if len(majority) != len(counts):
            raise ValueError(f"task_metrics: {len(majority)} majority verdicts for {len(counts)} problems")
        out[f"maj@{min_n}"] = sum(bool(m) for m in majority) / len(majority)
    if reward_means is not None:
        if len(reward_means) != len(counts):
            raise ValueError(f"task_metrics: {len(reward_means)} reward means for {len(counts)} problems")
        out["reward_mean"], out["reward_mean_stderr"] = mean_with_stderr(reward_means)
    return out
