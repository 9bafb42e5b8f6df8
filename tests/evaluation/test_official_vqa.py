"""VQA accuracy (sapo_vl.evaluation.official): EvalAI's answer processor and the leave-one-annotator-out
min(#matches / 3, 1) of Antol et al. 2015 / Goyal et al. 2017; cases derived from those definitions."""

import pytest

from sapo_vl.evaluation.official import vqa_accuracy
from sapo_vl.rewards.vqa import exact_match, normalize_vqa

NORMALIZE = [
    ("Red", "red"),
    ("  Red  ", "red"),
    ("Two", "2"),
    ("two dogs", "2 dogs"),
    ("none", "0"),
    ("ten", "10"),
    ("eleven", "eleven"),
    ("the red car", "red car"),
    ("A", ""),  # an article alone normalises to nothing
    ("an apple", "apple"),
    ("Yes.", "yes"),
    ("yes!", "yes"),
    ("what?", "what"),
    ("1,000", "1000"),  # commas are dropped before anything else
    ("3.5", "3.5"),  # a full stop before a digit stays
    ("3.", "3"),
    ("e.g.", "eg"),
    ("dont", "don't"),
    ("cant", "can't"),
    ("twas", "'twas"),
    ("whens", "when's"),
    ("yall", "y'all"),
    ("couldn'tve", "couldn't've"),
    ("couldnt've", "couldn't've"),
    ("somebody'd", "somebodyd"),  # the one table entry that runs backwards
    ("somebodyd", "somebodyd"),
    ("its", "its"),  # words that are also apostrophe-less contractions stay
    ("were", "were"),
    ("hell", "hell"),
    ("im", "im"),  # the table's "Im" key has a capital: lower-cased text never meets it
    ("it's", "it 's"),  # "'s" is split off
    ("John's hat", "john 's hat"),
    ("black/white", "black white"),
    ("black / white", "black white"),
    ("left-hand", "left hand"),
    ("left - hand", "left hand"),
    ("t-shirt-(", "t shirt"),  # decided on the input: "-" has no space beside it there, so it becomes one
    ("x;-y", "x y"),
    ("(a)", ""),
    ("@home", "home"),
    ("a\tb", "b"),
    ("line\nbreak", "line break"),
    ("5:30", "5:30"),  # no colon in EvalAI's list
]

ACCURACY = [
    # all ten annotators agree: compared as written
    ("2", ["2"] * 10, 1.0),
    ("two", ["2"] * 10, 1.0),
    ("Two.", ["2"] * 10, 1.0),
    ("3", ["2"] * 10, 0.0),
    ("Yes", ["yes"] * 10, 1.0),
    ("YES!", ["yes"] * 10, 1.0),
    ("yes, it is", ["yes"] * 10, 0.0),
    ("Yes", ["Yes"] * 10, 0.0),  # a unanimous gold is never normalised, so "Yes" cannot be matched
    ("A", ["A"] * 10, 0.0),
    ("", ["A"] * 10, 0.0),
    # mixed answers: min(#others agreeing / 3, 1), averaged over the held-out annotator
    ("red", ["red"] * 3 + ["blue"] * 7, 0.9),
    ("blue", ["red"] * 3 + ["blue"] * 7, 1.0),
    ("green", ["red"] * 3 + ["blue"] * 7, 0.0),
    ("red", ["red"] + ["blue"] * 9, 0.3),
    ("red", ["red"] * 2 + ["blue"] * 8, 0.6),
    ("red", ["red"] * 4 + ["blue"] * 6, 1.0),
    ("the dog", ["a dog"] * 5 + ["dog"] * 5, 1.0),  # once they differ, the answers are normalised too
    ("Dog.", ["a dog"] * 5 + ["dog"] * 5, 1.0),
    ("dont", ["don't"] * 3 + ["no"] * 7, 0.9),
    ("twas", ["'twas"] * 3 + ["no"] * 7, 0.9),
    ("whens", ["when's"] * 3 + ["x"] * 7, 0.9),
    ("two", ["2"] * 3 + ["two"] * 3 + ["3"] * 4, 1.0),
    ("A", ["A"] * 5 + ["B"] * 5, 1.0),  # "A" and the prediction both normalise to ""
    ("", ["A"] * 5 + ["B"] * 5, 1.0),
    ("b", ["A"] * 5 + ["B"] * 5, 1.0),
    ("1,000", ["1000"] * 2 + ["100"] * 8, 0.6),
    ("3.5", ["3.5"] * 3 + ["3"] * 7, 0.9),
    ("yes", ["yes", "no"], 1 / 6),  # two answers: 0 with "yes" held out, 1/3 with "no" held out
    ("yes", ["yes", "yes", "no"], 4 / 9),
    ("no", ["yes", "no", "no", "no"], 0.75),
]


@pytest.mark.parametrize(("answer", "normalized"), NORMALIZE)
def test_normalize_vqa_is_evalais_processor(answer, normalized):
    assert normalize_vqa(answer) == normalized


@pytest.mark.parametrize(("prediction", "answers", "expected"), ACCURACY)
def test_vqa_accuracy(prediction, answers, expected):
    assert vqa_accuracy(prediction, answers) == pytest.approx(expected, abs=1e-12)


def test_the_tables_are_large_enough():
    assert len(NORMALIZE) + len(ACCURACY) >= 60


def test_issue9_contractions_and_punctuation_follow_evalai():
    """Issue 9: the vqa verifier's normalisation left "twas"/"whens" alone and decided punctuation on text it had
    already rewritten ("t-shirt-(" gave "tshirt"); it is now EvalAI's processor, shared with vqa_accuracy."""
    assert (normalize_vqa("twas"), normalize_vqa("whens"), normalize_vqa("t-shirt-(")) == ("'twas", "when's", "t shirt")
    assert exact_match("twas", ["'twas"]) == 1.0 and exact_match("t-shirt-(", ["t shirt"]) == 1.0


@pytest.mark.parametrize(("prediction", "answers", "error", "match"), [
    ("x", ["x"], ValueError, "answers needs at least 2"),
    ("x", "xx", TypeError, "answers must be a list of str"),
    (3, ["x", "x"], TypeError, "prediction must be a str"),
])
def test_bad_input_is_a_clear_error(prediction, answers, error, match):
    with pytest.raises(error, match=f"vqa_accuracy: {match}"):
        vqa_accuracy(prediction, answers)
