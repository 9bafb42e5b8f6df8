"""The vqa verifier (sapo_vl.rewards.vqa.vqa_reward) on completions: each metric's table, and issue 9's article-only
golds ("A", "An", "The"), which normalisation used to empty so that nothing could match them."""

import pytest

from sapo_vl.rewards.vqa import answer_form, vqa_reward

CASES = [  # (completion, gold, metric, reward)
    # exact: normalised exact match, no substring credit
    ("red", "red", "exact", 1.0),
    ("Red.", "red", "exact", 1.0),
    ("The red one.", "red 1", "exact", 1.0),
    ("<answer>Two</answer>", "2", "exact", 1.0),
    (r"\boxed{\text{blue}}", "blue", "exact", 1.0),
    ("The answer is: red.", "red", "exact", 1.0),
    ("**Answer:** red", "red", "exact", 1.0),
    ("<think>blue?</think>Red", "red", "exact", 1.0),
    ("red green blue", "red", "exact", 0.0),
    ("dark red", "red", "exact", 0.0),
    ("", "red", "exact", 0.0),
    ("<think>red", "red", "exact", 0.0),
    ("dont know", "don't know", "exact", 1.0),
    ("none", "0", "exact", 1.0),
    ("crimson", ["red", "crimson"], "exact", 1.0),
    # article-only golds keep their article
    ("A", "A", "exact", 1.0),
    ("a.", "A", "exact", 1.0),
    (r"\boxed{A}", "A", "exact", 1.0),
    ("The answer is A.", "A", "exact", 1.0),
    ("An", "An", "exact", 1.0),
    ("the", "The", "exact", 1.0),
    ("The", "A", "exact", 0.0),
    ("", "A", "exact", 0.0),
    ("a cat", "A", "exact", 0.0),
    ("A", "cat", "exact", 0.0),
    # relaxed (the verifier's ChartQA-style match: 5 %, units, percent, separators, number words)
    ("10.4", "10", "relaxed", 1.0),
    ("10.6", "10", "relaxed", 0.0),
    ("12%", "12", "relaxed", 1.0),
    ("0.12", "12%", "relaxed", 1.0),
    ("1,234", "1234", "relaxed", 1.0),
    ("$5", "5", "relaxed", 1.0),
    ("five", "5", "relaxed", 1.0),
    ("1,200 people", "1200", "relaxed", 1.0),
    ("3 or 4", "3", "relaxed", 0.0),
    ("Yes.", "Yes", "relaxed", 1.0),
    ("Germany", "germany", "relaxed", 1.0),
    ("A", "A", "relaxed", 1.0),
    ("The", "The", "relaxed", 1.0),
    ("0", "0", "relaxed", 1.0),
    ("0.001", "0", "relaxed", 0.0),
    # numeric: one number within 1e-4
    ("100.005", "100", "numeric", 1.0),
    ("100.02", "100", "numeric", 0.0),
    ("about 7", "7", "numeric", 1.0),
    ("7 or 8", "7", "numeric", 0.0),
    # anls (the verifier's: the paper's strict threshold, normalised lengths)
    ("hello world", "Hello  World", "anls", 1.0),
    ("helo world", "hello world", "anls", 1 - 1 / 11),
    ("abcd", "abxy", "anls", 0.0),
    ("abcdefgh", "abcdefxy", "anls", 0.75),
    ("", "invoice", "anls", 0.0),
    # vqa_soft: min(1, agreeing others / 3) over the held-out annotator
    ("red", ["red"] * 3 + ["blue"] * 7, "vqa_soft", 0.9),
    ("blue", ["red"] * 3 + ["blue"] * 7, "vqa_soft", 1.0),
    ("red", ["red"] + ["blue"] * 9, "vqa_soft", 0.3),
    ("A", ["A"] * 3 + ["B"] * 7, "vqa_soft", 0.9),
    ("", ["A"] * 3 + ["B"] * 7, "vqa_soft", 0.0),
    ("Red.", ["red"], "vqa_soft", 1.0),
    # yesno: polarity
    ("Yes, it is.", "yes", "yesno", 1.0),
    ("No.", "no", "yesno", 1.0),
    ("yes or no", "yes", "yesno", 0.0),
    ("maybe", "yes", "yesno", 0.0),
    ("NO", "yes", "yesno", 0.0),
]


@pytest.mark.parametrize(("completion", "gold", "metric", "reward"), CASES)
def test_vqa_reward(completion, gold, metric, reward):
    assert vqa_reward([completion], answer=[gold], vqa_metric=metric) == [pytest.approx(reward)]


def test_the_table_is_large_enough():
    assert len(CASES) >= 60


@pytest.mark.parametrize(("text", "form"), [("A", "a"), ("The.", "the"), ("an", "an"), ("The dog", "dog"),
                                            ("", ""), ("?", "")])
def test_answer_form(text, form):
    assert answer_form(text) == form


@pytest.mark.parametrize("gold", ["A", "An", "The"])
@pytest.mark.parametrize("metric", ["exact", "relaxed"])
def test_issue9_article_only_golds_are_matchable(gold, metric):
    assert vqa_reward([gold, f"{gold}.", "", "cat"], answer=[gold] * 4, vqa_metric=metric) == [1.0, 1.0, 0.0, 0.0]
