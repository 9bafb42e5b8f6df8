"""pass@k against exact combinatorics, its input checks, and the per-task aggregation."""

import math

import pytest

from sapo_vl.evaluation import metrics
from sapo_vl.evaluation.metrics import majority_vote, pass_at_k, task_metrics


def exact_pass_at_k(n: int, c: int, k: int) -> float:
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 10, 16, 50, 200])
def test_pass_at_k_matches_exact_binomials_on_a_grid(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(exact_pass_at_k(n, c, k), rel=1e-12, abs=1e-12)


def test_pass_at_k_is_stable_where_binomials_overflow_floats():
    n, c, k = 2000, 3, 500  # C(2000, 500) ~ 1e483, beyond float range
    expected = 1.0 - math.comb(n - c, k) / math.comb(n, k)  # exact rational arithmetic in Python ints
    assert pass_at_k(n, c, k) == pytest.approx(expected, rel=1e-12)


def test_pass_at_k_edge_cases():
    assert pass_at_k(10, 0, 5) == 0.0  # nothing correct
    assert pass_at_k(10, 10, 1) == 1.0  # everything correct
    assert pass_at_k(10, 7, 4) == 1.0  # n - c < k: every draw of k holds a correct one
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)  # pass@1 is c/n


@pytest.mark.parametrize(
    "n,c,k,message",
    [(5, 6, 1, "0 <= c <= n"), (5, -1, 1, "0 <= c <= n"), (5, 2, 0, "1 <= k <= n"), (5, 2, 6, "1 <= k <= n"),
     (0, 0, 1, "at least one sample")],
)
def test_pass_at_k_rejects_invalid_counts_with_the_rule_broken(n, c, k, message):
    with pytest.raises(ValueError, match=message):
        pass_at_k(n, c, k)


def test_pass_at_k_rejects_non_integers():
    with pytest.raises(TypeError, match="k must be an int"):
        pass_at_k(4, 1, 1.0)
    with pytest.raises(TypeError, match="c must be an int"):
        pass_at_k(4, True, 1)


def test_task_metrics_pass1_is_mean_of_c_over_n_with_stderr():
    out = task_metrics([(4, 1), (4, 3)], ks=[1])
    assert out["pass@1"] == pytest.approx(0.5)
    rates = [0.25, 0.75]
    sd = math.sqrt(sum((r - 0.5) ** 2 for r in rates) / 1)
    assert out["pass@1_stderr"] == pytest.approx(sd / math.sqrt(2))


def test_task_metrics_reports_pass_at_k_only_for_k_at_most_the_smallest_n():
    out = task_metrics([(4, 1), (2, 1)], ks=[1, 2, 4, 8])
    assert "pass@2" in out and "pass@4" not in out and "pass@8" not in out
    assert out["pass@2"] == pytest.approx((exact_pass_at_k(4, 1, 2) + exact_pass_at_k(2, 1, 2)) / 2)


def test_task_metrics_maj_keeps_its_own_name_and_needs_equal_n():
    assert task_metrics([(3, 1), (3, 2)], [1], majority=[False, True])["maj@3"] == 0.5
    assert not any(k.startswith("maj@") for k in task_metrics([(3, 1), (2, 2)], [1], majority=[False, True]))
    assert not any(k.startswith("maj@") for k in task_metrics([(1, 1)], [1], majority=[True]))


def test_task_metrics_reward_mean():
    out = task_metrics([(1, 0), (1, 1)], [1], reward_means=[0.6, 1.0])
    assert out["reward_mean"] == pytest.approx(0.8)


def test_task_metrics_rejects_empty_input():
    with pytest.raises(ValueError, match="no scored problems"):
        task_metrics([], [1])


def test_majority_vote_ignores_unparsed_answers_and_breaks_ties_by_first_seen():
    assert majority_vote([None, "4", "5", "4"], [False, True, False, True]) is True
    assert majority_vote(["5", "4"], [False, True]) is False  # tie: "5" came first
    assert majority_vote([None, None], [False, False]) is False


def test_mean_pass_at_k_averages_problems():
    assert metrics.mean_pass_at_k([(2, 1), (2, 2)], 1) == pytest.approx(0.75)
