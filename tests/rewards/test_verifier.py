"""Verifier: a TRL reward function that also extracts the answer it grades."""

from sapo_vl.rewards import REWARDS, Verifier, combine_rewards, math_reward


def _exact(completions, **columns):
    """Exact match against ``answer``."""
    return [float(c.strip() == a) for c, a in zip(completions, columns["answer"])]


def test_verifier_is_called_like_its_score_function():
    verifier = Verifier("exact", _exact, lambda text, /, **row: text.strip())
    assert verifier(["4 ", "5"], answer=["4", "4"], prompts=["p", "p"]) == [1.0, 0.0]
    assert verifier.score is _exact and verifier.extract(" 4 ", answer="4") == "4"


def test_verifier_is_named_and_documented_as_a_reward_function():
    verifier = Verifier("exact", _exact, str.strip)
    assert verifier.__name__ == "exact"
    assert verifier.__doc__ == _exact.__doc__ and verifier.__module__ == __name__
    assert combine_rewards([verifier]).__name__ == "combined(exact)"


def test_answers_are_not_majority_voted_unless_the_verifier_says_so():
    assert Verifier("exact", _exact, str.strip).votable is False
    assert Verifier.votable is False


def test_builtin_verifier_keeps_the_public_reward_function():
    assert REWARDS["math"].score is math_reward
    assert REWARDS["math"].__doc__ == math_reward.__doc__
