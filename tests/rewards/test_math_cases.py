"""The math verifier on the answers models write: extraction and equivalence tables, and one regression test for
each math bug of issue 9 (space-grouped numbers, decimal commas, Minerva-style answer lines, split boxes)."""

import pytest

from sapo_vl.rewards._pool import get_pool
from sapo_vl.rewards.math import extract_answer, join_groups, math_equal, math_reward


@pytest.fixture(scope="module", autouse=True)
def warm_pool():
    get_pool().warm_up()


MINERVA = "Final Answer: The final answer is ${}$. I hope it is correct."

EXTRACT = [
    # Minerva / Qwen answer lines: the $...$ span, not the rest of the line
    (MINERVA.format("(0,1)"), "(0,1)"),
    (MINERVA.format("-6,10"), "-6,10"),
    (MINERVA.format(r"\frac12"), r"\frac12"),
    (MINERVA.format("14{,}916"), "14{,}916"),
    (MINERVA.format("5"), "5"),
    (MINERVA.format("x^2+1"), "x^2+1"),
    (r"Final Answer: The final answer is $\boxed{7}$. I hope it is correct.", "7"),
    ("Final Answer: The largest $n$ is 34.", "34"),
    ("Final Answer: $n$ is 34", "34"),  # a leading span that is the subject is not the answer
    ("Answer: The value of $x$ is $-3$.", "-3"),
    ("The answer is 2, since there are two solutions.", "2"),
    ("The answer is 7 because 3+4=7.", "7"),
    ("Final answer: 10, as required.", "10"),
    ("The answer is: 6 hours, since each takes 2.", "6 hours"),
    ("The answer is 3.14, which is close to pi.", "3.14"),
    ("the answer is 1.5.", "1.5"),  # a decimal point does not end the sentence
    ("So the final answer is 3.5", "3.5"),
    ("The answer is $3$ and $4$.", "3, 4"),  # spans joined by "and" are one answer
    ("The answer is $5$ cm.", "5"),
    (r"The answer is $\frac{1}{2}$ and the area is 3.", r"\frac{1}{2}"),
    (r"The answer is \(\frac{1}{2}\).", r"\frac{1}{2}"),
    ("The answer is x = 3.", "x = 3"),
    ("The answer is **12**.", "12"),
    ("The answer is 1, 2 and 3.", "1, 2 and 3"),
    (r"Therefore, the answer is $\$5.00$.", r"\$5.00"),
    ("The answer is 3. Hmm, no. The answer is 5.", "5"),
    # markdown cues
    ("**Answer:** 42", "42"),
    (r"**Final Answer:** $\frac{3}{4}$", r"\frac{3}{4}"),
    ("**Answer**: 7", "7"),
    ("__Answer:__ 8", "8"),
    ("Answer:\n\n15", "15"),
    # boxes: one answer split over joined boxes, a later box after prose corrects an earlier one
    (r"$\boxed{-2}$ and $\boxed{1}$", "-2, 1"),
    (r"\boxed{1}, \boxed{2}, \boxed{3}", "1, 2, 3"),
    (r"\(\boxed{1}\) and \(\boxed{2}\)", "1, 2"),
    (r"x = \boxed{2} \quad \text{or} \quad x = \boxed{3}", "3"),  # "x =" is prose between the boxes
    (r"\boxed{2} or \boxed{3}", "2, 3"),  # a hedge reads as both, so it matches neither alone
    (r"\boxed{12}. Wait, let me recheck. Actually \boxed{13}", "13"),
    (r"I first got \boxed{12}, which is wrong; the area is \boxed{13}", "13"),
    (r"\boxed{4} \boxed{ }", "4"),
    (r"\boxed{} so the answer is 5", "5"),
    (r"<think>\boxed{1}</think>The final answer is 2.", "2"),
    # no answer: a number in prose is not one unless a cue marks it
    ("I computed 5 apples and 7 pears.", None),
    ("There are 12 eggs in the box.", None),
    ("The total is 12.", None),
    ("<think>The answer is 3", None),
    ("", None),
]

EQUAL = [
    ("1 000", "1000"),
    ("10 000", "10000"),
    ("1 000 000", "1000000"),
    ("1\u00a0000", "1000"),
    ("1\u202f000", "1000"),
    (r"1\,000", "1000"),
    ("14{,}916", "14916"),
    ("1{,}234{,}567", "1234567"),
    ("$1 000$", "1000"),
    ("10^3", "1 000"),
    ("1,000", "1000"),
    ("12,345.5", "12345.5"),
    ("1.22", "1,22"),  # the gold writes a decimal comma: the answer may use a point
    ("1,22", "1,22"),
    ("1,50", "1,5"),
    ("0.125", "0,125"),
    ("-2, 1", "1,-2"),
    (r"\{1, 2\}", "1,2"),  # a comma gold keeps its list reading too
    ("2, 1", "1, 2"),
]

NOT_EQUAL = [
    ("1 000", "0"),
    ("10 000", "0"),
    ("1 000", "1"),
    ("1 0000", "10000"),  # not a thousands group
    ("1,22", "1.22"),  # a decimal comma only where the gold has one
    ("0,125", "0.125"),
    ("1,5", "1.5"),
    ("2,1", "2.1"),
    ("1,220", "1,22"),  # one thousand two hundred twenty
    ("12, 13", "13"),
    ("22", "1,22"),
    ("1.5", "1,22"),
]


@pytest.mark.parametrize(("completion", "answer"), EXTRACT)
def test_extract(completion, answer):
    assert extract_answer(completion) == answer


@pytest.mark.parametrize(("pred", "gold"), EQUAL)
def test_equal(pred, gold):
    assert math_equal(pred, gold) is True


@pytest.mark.parametrize(("pred", "gold"), NOT_EQUAL)
def test_not_equal(pred, gold):
    assert math_equal(pred, gold) is False


def test_the_tables_are_large_enough():
    assert len(EXTRACT) + len(EQUAL) + len(NOT_EQUAL) >= 60


@pytest.mark.parametrize(("text", "joined"), [("1 000", "1000"), ("x = 12 345", "x = 12345"), ("1, 234", "1, 234"),
                                              ("0 125", "0 125"), ("14{,}916", "14916"), ("3{,}14", "3,14")])
def test_join_groups(text, joined):
    assert join_groups(text) == joined


# --- issue 9 regressions -------------------------------------------------------------------------------------------

def test_issue9_space_grouped_numbers_are_one_number_not_a_product():
    assert math_equal("1 000", "0") is False
    assert math_equal("10 000", "0") is False
    assert math_equal("1 000", "1000") is True


def test_issue9_a_decimal_comma_is_read_only_where_the_gold_has_one():
    assert math_equal("1.22", "1,22") is True
    assert math_equal("1,22", "1.22") is False


@pytest.mark.parametrize(("inner", "gold"), [("(0,1)", "(0,1)"), ("-6,10", "-6,10"), (r"\frac12", "0.5"),
                                             ("14{,}916", "14916")])
def test_issue9_minerva_answer_lines_score(inner, gold):
    assert math_reward([MINERVA.format(inner)], answer=[gold]) == [1.0]


def test_issue9_subject_and_reason_around_the_answer():
    assert math_reward(["Final Answer: The largest $n$ is 34."], answer=["34"]) == [1.0]
    assert math_reward(["The answer is 2, since there are two solutions."], answer=["2"]) == [1.0]


def test_issue9_an_answer_split_over_boxes_scores_and_a_gold_with_boxes_keeps_them_all():
    assert math_reward([r"$\boxed{-2}$ and $\boxed{1}$"], answer=["1,-2"]) == [1.0]
    assert math_reward([r"\boxed{1, -2}"], answer=[r"so $x = \boxed{1}$ or... $\boxed{-2}$ and $\boxed{1}$"]) == [1.0]


def test_issue9_a_corrected_box_scores_the_correction_only():
    completion = r"So \boxed{12}. Hmm, that double counts; removing the overlap gives \boxed{13}."
    assert math_reward([completion, completion], answer=["13", "12"]) == [1.0, 0.0]


def test_issue9_hedged_boxes_score_neither():
    assert math_reward([r"\boxed{12} or \boxed{13}"] * 2, answer=["12", "13"]) == [0.0, 0.0]


def test_issue9_a_number_in_prose_is_not_an_answer():
    assert math_reward(["There are 12 eggs in the box.", "I don't know."], answer=["12", "12"]) == [0.0, 0.0]


def test_issue9_set_relation_comparison_is_exposed():
    assert math_equal(r"-2 \le x \le 7", "[-2,7]") is False
    assert math_equal(r"-2 \le x \le 7", "[-2,7]", allow_set_relation_comp=True) is True
    assert math_equal("1 < x < 3", "(1,3)", allow_set_relation_comp=True) is True
    assert math_reward([r"\boxed{-2 \le x \le 7}"], answer=["[-2,7]"], allow_set_relation_comp=True) == [1.0]
