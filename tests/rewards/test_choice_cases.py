"""Multiple-choice extraction (sapo_vl.rewards.vqa.extract_choice) on the answers models write, and issue 9's
markdown answer lines; no letter is ever guessed: hedges, articles and "I don't know" give none."""

import pytest

from sapo_vl.rewards.vqa import extract_choice, mcq_reward

CASES = [
    # a lone letter, however wrapped
    ("B", None, "B"),
    ("b", None, "B"),
    ("(B)", None, "B"),
    ("[C]", None, "C"),
    ("B.", None, "B"),
    ("**B**", None, "B"),
    ("**B.**", None, "B"),
    (r"\boxed{C}", None, "C"),
    (r"\boxed{\text{C}}", None, "C"),
    (r"$\boxed{D}$", None, "D"),
    ("<answer>(d)</answer>", None, "D"),
    ("<think>A seems off</think>\n<answer>B</answer>", None, "B"),
    # answer cues, markdown included (issue 9)
    ("**Answer:** D", None, "D"),
    ("**Answer:** (D)", None, "D"),
    ("**Final Answer:** C", None, "C"),
    ("**Answer**: B", None, "B"),
    ("**Answer**: **B**", None, "B"),
    ("__Answer:__ C", None, "C"),
    ("Answer: C", None, "C"),
    ("Answer: **D**", None, "D"),
    ("Answer:\tD", None, "D"),
    ("The answer is (B).", None, "B"),
    ("The answer is B.", None, "B"),
    ("The correct answer is B because the dog is brown.", None, "B"),
    ("The correct option is D", None, "D"),
    ("I pick choice C.", None, "C"),
    ("Option (a) is right: the answer is (a).", None, "A"),
    ("The answer is A. Wait, no: the answer is C.", None, "C"),
    ("Looking at the chart...\n\n**Answer:** B\n\nThe bars show it.", None, "B"),
    (r"The answer is A... no. \boxed{D}", None, "D"),  # a box beats a cue outside it
    # a line or an opening marker
    ("Looking at the image...\nB\n", None, "B"),
    ("(C) a red car", None, "C"),
    ("C. a red car", None, "C"),
    ("C) a red car", None, "C"),
    ("D: the last one", None, "D"),
    ("**B.** Because of the tail.", None, "B"),
    # the option's text
    ("A dog.", ["a cat", "a dog"], "B"),
    ("The answer is a bird", ["a cat", "a dog", "a bird"], "C"),
    ("Answer: dog", ["cat", "dog"], "B"),
    ("dog", ["cat", "dog"], "B"),
    # no letter: hedges, articles, refusals, out-of-range letters
    ("A and B", None, None),
    ("A or B", None, None),
    ("(A) or (B), hard to say", None, None),
    ("Answer: B and C", None, None),
    ("**Answer:** B or C", None, None),
    ("The answer is B, C", None, None),
    ("The answer is B/C", None, None),
    ("Answer: (A) and (D)", None, None),
    (r"\boxed{A} and \boxed{C}", None, None),
    ("I don't know", None, None),
    ("**Answer:** I don't know", None, None),
    ("The answer is I'm not sure", None, None),
    ("A cat is sitting on the mat.", None, None),
    ("The answer is A cat.", "ABCD", None),
    ("The answer is A because of the tail.", None, None),
    ("I cannot tell from the image.", None, None),
    ("", None, None),
    ("<think>The answer is B", None, None),
    ("The answer is (E).", ["w", "x", "y", "z"], None),
    ("a dog and a cat", ["a cat", "a dog"], None),
    ("It is either (A) or (B).", None, None),
]


@pytest.mark.parametrize(("text", "choices", "letter"), CASES)
def test_extract_choice(text, choices, letter):
    if isinstance(choices, str):  # a letters string, not option texts
        assert extract_choice(text, letters=choices) == letter
    else:
        assert extract_choice(text, choices) == letter


def test_the_table_is_large_enough():
    assert len(CASES) >= 60


@pytest.mark.parametrize("text", ["**Answer:** D", "**Answer:** (D)", "**Final Answer:** D", "**Answer**: D"])
def test_issue9_markdown_answer_lines_score(text):
    assert mcq_reward([text], answer=["D"]) == [1.0]


@pytest.mark.parametrize("text", ["A and B", "I don't know", "Answer: B and C"])
def test_issue9_no_letter_from_hedges_or_refusals(text):
    assert extract_choice(text) is None
    assert mcq_reward([text] * 3, answer=["A", "B", "C"]) == [0.0, 0.0, 0.0]
