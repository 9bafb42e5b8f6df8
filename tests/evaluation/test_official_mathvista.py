"""MathVista's answer matching (sapo_vl.evaluation.official): normalize_extracted_answer then exact equality with
the gold string (Lu et al. 2024, evaluation/calculate_score.py); cases derived from that definition."""

import pytest

from sapo_vl.evaluation.official import OFFICIAL, mathvista_accuracy, mathvista_normalize

CHOICES = ["3 cm", "4 cm", "5 cm", "6 cm"]
SHAPES = ["circle", "triangle", "square"]

MULTI_CHOICE = [  # (extraction, choices, gold option text, expected)
    ("C", CHOICES, "5 cm", 1.0),
    ("(C)", CHOICES, "5 cm", 1.0),
    ("(c)", CHOICES, "5 cm", 1.0),  # the bracketed letter may be lower-case
    ("(C) 5 cm", CHOICES, "5 cm", 1.0),
    (" C ", CHOICES, "5 cm", 1.0),
    ("c", CHOICES, "5 cm", 0.0),  # a bare lower-case letter is not a letter: nearest option to "c" is "3 cm"
    ("5 cm", CHOICES, "5 cm", 1.0),  # an option's text is its own nearest option
    ("5cm", CHOICES, "5 cm", 1.0),
    ("5", CHOICES, "5 cm", 1.0),  # nearest by edit distance: 3 edits to "5 cm", 4 to the others
    ("7", CHOICES, "3 cm", 1.0),  # 4 edits to every option: the first wins
    ("7", CHOICES, "4 cm", 0.0),
    ("6 centimetres", CHOICES, "6 cm", 1.0),
    ("E", CHOICES, "5 cm", 0.0),  # out of range: nearest option by edit distance ("3 cm", the first of ties)
    ("E", CHOICES, "3 cm", 1.0),
    ("", CHOICES, "3 cm", 1.0),  # nothing extracted: the shortest option, first of ties
    ("", SHAPES, "square", 0.0),
    ("", SHAPES, "circle", 1.0),  # "circle" and "square" are both 6 long: the first
    ("(B) or (C)", CHOICES, "4 cm", 1.0),  # the first bracketed letter
    ("(C) not (B)", CHOICES, "5 cm", 1.0),
    ("B", SHAPES, "triangle", 1.0),
    ("triangel", SHAPES, "triangle", 1.0),
    ("squares", SHAPES, "square", 1.0),
    ("The answer is B", SHAPES, "triangle", 1.0),  # nearest by edit distance happens to be "triangle"
    ("I don't know", SHAPES, "triangle", 1.0),  # a guess that may be right
    ("D", SHAPES, "circle", 1.0),  # out of range: 6 edits to "circle" and to "square", the first wins
    ("D", SHAPES, "square", 0.0),
]

FREE_FORM = [  # (extraction, answer_type, precision, gold, expected)
    ("3", "integer", None, "3", 1.0),
    ("-0", "integer", None, "0", 1.0),
    (" 12 ", "integer", None, "12", 1.0),
    ("12.", "integer", None, "12", 1.0),
    ("0.333", "float", 2, "0.33", 1.0),
    ("1/3", "float", 2, "0.33", 0.0),
    ("3.0", "integer", None, "3", 1.0),
    ("3.9", "integer", None, "3", 1.0),  # int() truncates
    ("-3.9", "integer", None, "-3", 1.0),
    ("03", "integer", None, "3", 1.0),
    ("1e2", "integer", None, "100", 1.0),
    ("3 apples", "integer", None, "3", 0.0),
    ("three", "integer", None, "3", 0.0),
    ("", "integer", None, "3", 0.0),
    ("1,000", "integer", None, "1000", 0.0),
    ("inf", "integer", None, "3", 0.0),
    ("1.5", "float", 1, "1.5", 1.0),
    ("1.54", "float", 1, "1.5", 1.0),
    ("1.56", "float", 1, "1.6", 1.0),
    ("1.55", "float", 1, "1.6", 1.0),  # 1.55 is 1.5500000000000000444 in binary: rounds up
    ("2.675", "float", 2, "2.68", 0.0),  # 2.675 is 2.67499999... in binary: rounds down
    ("1.5", "float", 2, "1.5", 1.0),
    ("0.1", "float", 2, "0.10", 0.0),  # the gold is not normalised: "0.1" is not "0.10"
    ("1.50", "float", 1, "1.5", 1.0),
    ("1.5", "float", 1.0, "1.5", 1.0),  # Parquet's float precision stands for the JSON release's int
    ("1.5", "float", float("nan"), "1.5", 0.0),  # an unset precision (NaN) cannot round
    ("2.5", "float", None, "2", 1.0),  # round(x, None) is an int (banker's rounding)
    ("3.14159", "float", 3, "3.142", 1.0),
    ("x", "float", 1, "1.5", 0.0),
    ("[1, 2]", "list", None, "[1, 2]", 1.0),
    ("[1,2]", "list", None, "[1, 2]", 0.0),  # lists compare as strings
    ("Yes", "text", None, "Yes", 1.0),
    ("yes", "text", None, "Yes", 0.0),
    (" Yes", "text", None, "Yes", 0.0),
    ("Paris", "text", None, "Paris", 1.0),
]


@pytest.mark.parametrize(("extraction", "choices", "gold", "expected"), MULTI_CHOICE)
def test_multiple_choice(extraction, choices, gold, expected):
    assert mathvista_accuracy(extraction, gold, choices=choices, question_type="multi_choice") == expected


@pytest.mark.parametrize(("extraction", "answer_type", "precision", "gold", "expected"), FREE_FORM)
def test_free_form(extraction, answer_type, precision, gold, expected):
    assert mathvista_accuracy(extraction, gold, question_type="free_form", answer_type=answer_type,
                              precision=precision) == expected


def test_the_tables_are_large_enough():
    assert len(MULTI_CHOICE) + len(FREE_FORM) >= 60


def test_normalize_gives_none_for_unparsable_numbers():
    assert mathvista_normalize("abc", [], "free_form", "integer", None) is None
    assert mathvista_normalize("abc", [], "free_form", "float", 1) is None


RECORD = {"id": "7", "answer": "B", "choices": ["3", "4", "5"], "meta": {"question_type": "multi_choice",
                                                                        "answer_type": "text", "precision": None}}


@pytest.mark.parametrize(("response", "expected"), [("B", 1.0), ("(B) 4", 1.0), ("4", 1.0), ("C", 0.0), ("", 0.0)])
def test_task_scorer_maps_the_gold_letter_back_to_its_option(response, expected):
    assert OFFICIAL["mathvista_accuracy"](response, RECORD) == expected


def test_task_scorer_reads_free_form_settings_from_meta():
    record = {"id": "8", "answer": "1.5", "choices": None,
              "meta": {"question_type": "free_form", "answer_type": "float", "precision": 1.0}}
    assert OFFICIAL["mathvista_accuracy"]("1.54", record) == 1.0
    assert OFFICIAL["mathvista_accuracy"]("1.44", record) == 0.0


def test_a_gold_letter_outside_the_options_is_a_clear_error():
    with pytest.raises(ValueError, match="doc 7: gold letter 'E' is not one of 3 options"):
        OFFICIAL["mathvista_accuracy"]("B", {**RECORD, "answer": "E"})


def test_multiple_choice_without_choices_is_a_clear_error():
    with pytest.raises(TypeError, match="mathvista_accuracy: choices must be a list of str"):
        mathvista_accuracy("B", "x", question_type="multi_choice")
