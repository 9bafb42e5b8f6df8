"""Visual-QA verifiers: normalisation, metrics, multiple-choice extraction, and the rewards."""

import pytest

from sapo_vl.rewards.vqa import (
    anls,
    exact_match,
    extract_choice,
    extract_numbers,
    extract_vqa_answer,
    levenshtein,
    mcq_reward,
    normalize_vqa,
    numeric_match,
    relaxed_accuracy,
    vqa_reward,
    vqa_soft_accuracy,
    yes_no,
    yes_no_match,
)

# --- normalisation -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("Red", "red"),
        ("The red car.", "red car"),
        ("the red one", "red 1"),  # number words become digits, as in the official evaluation
        ("an apple", "apple"),
        ("Two", "2"),
        ("none", "0"),
        ("dont", "don't"),
        ("isnt it", "isn't it"),
        ("its tail", "its tail"),  # a possessive, not a contraction
        ("3.5", "3.5"),
        ("1,000", "1000"),
        ("black/white", "black white"),
        ("yes!", "yes"),
        ("left - right", "left right"),
        ("  many   spaces\n", "many spaces"),
    ],
)
def test_normalize_vqa(raw, normalized):
    assert normalize_vqa(raw) == normalized


# --- metrics -------------------------------------------------------------------------------------------------------

def test_exact_match_after_normalization():
    assert exact_match("The Two cats.", ["2 cats"]) == 1.0


def test_exact_match_no_substring_credit():
    assert exact_match("red green blue", ["red"]) == 0.0
    assert exact_match("red", ["dark red"]) == 0.0


def test_exact_match_empty_prediction_scores_zero():
    assert exact_match("", ["", "red"]) == 0.0
    assert exact_match("the", ["a"]) == 0.0  # both normalise to nothing


def test_exact_match_max_over_golds():
    assert exact_match("crimson", ["red", "crimson"]) == 1.0


def test_vqa_soft_accuracy_counts_agreeing_annotators():
    golds = ["red"] * 2 + ["blue"] * 8
    # each held-out subset of 9 has 2 "red" (when a blue is held out) or 1 "red" (when a red is held out)
    expected = (8 * min(1, 2 / 3) + 2 * min(1, 1 / 3)) / 10
    assert vqa_soft_accuracy("red", golds) == pytest.approx(expected)
    assert vqa_soft_accuracy("blue", golds) == 1.0


def test_vqa_soft_accuracy_single_gold_is_exact():
    assert vqa_soft_accuracy("Red.", ["red"]) == 1.0


def test_extract_numbers_forms():
    assert extract_numbers("$1,234.5 and -3% and 2e3") == [(1234.5, False), (-3.0, True), (2000.0, False)]
    assert extract_numbers("five apples") == [(5.0, False)]
    assert extract_numbers("version 1.2.3") == []


def test_numeric_match_relative_tolerance():
    assert numeric_match("100.005", ["100"], rel_tol=1e-4) == 1.0
    assert numeric_match("100.02", ["100"], rel_tol=1e-4) == 0.0


def test_numeric_match_rejects_hedged_answers():
    assert numeric_match("3 or 4", ["3"]) == 0.0


def test_numeric_match_zero_gold():
    assert numeric_match("0", ["0"]) == 1.0
    assert numeric_match("0.001", ["0"]) == 0.0


def test_relaxed_accuracy_five_percent():
    assert relaxed_accuracy("104.9", ["100"]) == 1.0
    assert relaxed_accuracy("95", ["100"]) == 1.0
    assert relaxed_accuracy("105.1", ["100"]) == 0.0


def test_relaxed_accuracy_text_is_exact():
    assert relaxed_accuracy("Germany", ["germany"]) == 1.0
    assert relaxed_accuracy("Germany France", ["germany"]) == 0.0


def test_relaxed_accuracy_percent_forms():
    assert relaxed_accuracy("12%", ["12"]) == 1.0
    assert relaxed_accuracy("12%", ["0.12"]) == 1.0
    assert relaxed_accuracy("0.12", ["12%"]) == 1.0


def test_relaxed_accuracy_units_and_separators():
    assert relaxed_accuracy("1,200 people", ["1200"]) == 1.0


def test_levenshtein():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3
    assert levenshtein("same", "same") == 0


def test_anls_values():
    assert anls("hello world", ["Hello  World"]) == 1.0
    assert anls("helo world", ["hello world"]) == pytest.approx(1 - 1 / 11)
    assert anls("abcd", ["abxy"]) == 0.0  # NL = 0.5 is not below the threshold
    assert anls("abcdefgh", ["abcdefxy"]) == pytest.approx(0.75)


def test_anls_max_over_golds_and_empty():
    assert anls("invoice", ["receipt", "invoice"]) == 1.0
    assert anls("", ["invoice"]) == 0.0


def test_anls_threshold_is_configurable():
    assert anls("abcd", ["abxy"], threshold=0.6) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("text", "polarity"),
    [("Yes.", "yes"), ("yes, it is", "yes"), ("No, there isn't.", "no"), ("NO", "no"), ("yes or no", None),
     ("maybe", None), ("", None)],
)
def test_yes_no_polarity(text, polarity):
    assert yes_no(text) == polarity


def test_yes_no_match():
    assert yes_no_match("Yes, it is.", ["yes"]) == 1.0
    assert yes_no_match("Yes and no", ["yes"]) == 0.0


# --- multiple choice -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "letter"),
    [
        (r"\boxed{C}", "C"),
        (r"\boxed{\text{C}}", "C"),
        ("<answer>(d)</answer>", "D"),
        ("B", "B"),
        ("**B.**", "B"),
        ("The answer is (B).", "B"),
        ("Answer: C", "C"),
        ("I compared them all.\nThe correct option is D", "D"),
        ("The answer is A. Wait, no: the answer is C.", "C"),
        ("The correct answer is B because the dog is brown.", "B"),
        ("Answer: **D**", "D"),
        ("Looking at the image...\nB\n", "B"),
        ("(C) a red car", "C"),
        ("C. a red car", "C"),
        ("<think>A looks wrong</think>\n<answer>B</answer>", "B"),
    ],
)
def test_extract_choice_cases(text, letter):
    assert extract_choice(text) == letter


def test_extract_choice_boxed_beats_cue_outside_it():
    assert extract_choice(r"The answer is A... no. \boxed{D}") == "D"


def test_extract_choice_article_is_not_a_choice():
    assert extract_choice("A cat is sitting on the mat.") is None
    assert extract_choice("The answer is A cat.", letters="ABCD") is None
    assert extract_choice("The answer is A because of the tail.") is None  # "A" could be the article


def test_extract_choice_no_parse_is_none():
    assert extract_choice("I cannot tell from the image.") is None
    assert extract_choice("") is None


def test_extract_choice_ambiguous_markers_are_none():
    assert extract_choice("(A) or (B), hard to say") is None
    assert extract_choice("A or B") is None


def test_extract_choice_unclosed_think_is_none():
    assert extract_choice("<think>The answer is B") is None


def test_extract_choice_letter_outside_options_is_none():
    assert extract_choice("The answer is (E).", choices=["x", "y", "z", "w"]) is None


def test_extract_choice_option_text_match():
    choices = ["a cat", "a dog", "a bird"]
    assert extract_choice("A dog.", choices) == "B"
    assert extract_choice("The answer is a bird", choices) == "C"
    assert extract_choice("a dog and a cat", choices) is None


def test_mcq_reward_no_parse_is_wrong_not_a_guess():
    out = mcq_reward(["no idea", "no idea", "no idea", "no idea"], answer=["A", "B", "C", "D"])
    assert out == [0.0, 0.0, 0.0, 0.0]


def test_mcq_reward_gold_forms():
    choices = [["cat", "dog"], ["cat", "dog"], ["cat", "dog"]]
    out = mcq_reward(["(B)", "B", "B"], answer=["B", 1, "dog"], choices=choices)
    assert out == [1.0, 1.0, 1.0]


def test_mcq_reward_list_of_accepted_letters():
    assert mcq_reward(["(C)", "(B)"], answer=[["A", "C"], ["A", "C"]]) == [1.0, 0.0]


def test_mcq_reward_none_answer_not_applicable():
    assert mcq_reward(["A", "B"], answer=[None, "B"]) == [None, 1.0]


def test_mcq_reward_bad_gold_is_a_clear_error():
    with pytest.raises(ValueError, match="sample 0"):
        mcq_reward(["A"], answer=["zebra"], choices=[["cat", "dog"]])


def test_mcq_reward_bad_choices_is_a_clear_error():
    with pytest.raises(TypeError, match="choices of sample 0"):
        mcq_reward(["A"], answer=["A"], choices=["A. cat B. dog"])


def test_mcq_reward_conversational():
    completion = [{"role": "assistant", "content": [{"type": "text", "text": "The answer is (A)."}]}]
    assert mcq_reward([completion], answer=["A"]) == [1.0]


# --- free-form reward ----------------------------------------------------------------------------------------------

def test_extract_vqa_answer_priorities():
    assert extract_vqa_answer(r"I think it is blue. \boxed{\text{red}}") == "red"
    assert extract_vqa_answer("<think>blue?</think><answer>Red</answer>") == "Red"
    assert extract_vqa_answer("The answer is: red.") == "red"
    assert extract_vqa_answer("Red.") == "Red"
    assert extract_vqa_answer("<think>red") is None


def test_vqa_reward_default_exact():
    out = vqa_reward(["<answer>Two</answer>", "red green blue", "", "<think>red"], answer=["2", "red", "red", "red"])
    assert out == [1.0, 0.0, 0.0, 0.0]


def test_vqa_reward_metric_as_kwarg_and_list_answers():
    out = vqa_reward(["Yes, it is.", "no"], answer=[["yes", "yeah"], "yes"], vqa_metric="yesno")
    assert out == [1.0, 0.0]


def test_vqa_reward_per_sample_metric_column():
    completions = ["<answer>102</answer>", "<answer>Invoce #12</answer>", "yes"]
    out = vqa_reward(completions, answer=["100", "Invoice #12", "yes"], vqa_metric=["relaxed", "anls", None])
    assert out[0] == 1.0
    assert out[1] == pytest.approx(1 - 1 / 11)
    assert out[2] == 1.0


def test_vqa_reward_metric_kwargs():
    out = vqa_reward(["abcd"], answer=["abxy"], vqa_metric="anls", metric_kwargs={"threshold": 0.6})
    assert out == [pytest.approx(0.5)]


def test_vqa_reward_unknown_metric_is_a_clear_error():
    with pytest.raises(ValueError, match="^vqa_reward: sample 0: unknown VQA metric 'fuzzy'; registered VQA metrics: "
                                         "anls, exact, numeric, ordered_words, ordered_words_partial, relaxed, "
                                         "vqa_soft, yesno$"):
        vqa_reward(["red"], answer=["red"], vqa_metric="fuzzy")


def test_vqa_reward_none_answer_not_applicable():
    assert vqa_reward(["red", "red"], answer=[None, "red"], prompts=["p", "p"]) == [None, 1.0]


# --- list answers in order ------------------------------------------------------------------------------------------


def test_ordered_words_scores_the_whole_list_in_order_and_partial_credit_counts_words_in_place():
    from sapo_vl.rewards import REWARDS

    gold = ["red, blue, red, green"]
    completions = ["<answer>Red, blue, red, green.</answer>", "red blue red green", "blue, red, red, green",
                   "red, blue, red", "red, blue, red, green, red", "", "<think>red, blue</think>red, blue, red, green"]
    assert REWARDS["ordered_words"](completions, answer=gold * 7) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    assert REWARDS["ordered_words_partial"](completions, answer=gold * 7) == [1.0, 1.0, 0.5, 0.75, 0.8, 0.0, 1.0]
    assert REWARDS["ordered_words"](["red"], answer=[None]) == [None]
    assert REWARDS["ordered_words"].extract("<answer>red, blue</answer>") == "red, blue"
