"""Benchmark adapters: option letters, list literals, LiveCodeBench test decoding, MBPP check wrapping."""

import base64
import json
import pickle
import zlib

import pytest

from sapo_vl.evaluation.adapters import ADAPTERS, decode_lcb_tests, options_block
from sapo_vl.evaluation.adapters import TaskDataError


def test_options_block_letters_options():
    assert options_block(["x", "y"]) == "(A) x\n(B) y"
    assert options_block([]) == ""


def test_mathvista_multiple_choice_answer_becomes_its_letter():
    row = ADAPTERS["mathvista"]({"question_type": "multi_choice", "choices": ["1", "2"], "answer": "2"}, "w")
    assert row["answer"] == "B" and row["reward"] == "mcq" and row["choices"] == ["1", "2"]


def test_mathvista_answer_outside_the_choices_is_an_error_not_a_guess():
    with pytest.raises(TaskDataError, match="doc 7: answer '3' is neither an option letter nor one of"):
        ADAPTERS["mathvista"]({"question_type": "multi_choice", "choices": ["1", "2"], "answer": "3"}, "doc 7")


def test_mathvista_free_form_float_hint_states_the_precision():
    row = ADAPTERS["mathvista"]({"question_type": "free_form", "answer_type": "float", "precision": 2.0,
                                 "answer": "1.25"}, "w")
    assert row["reward"] == "math" and "2 decimal places" in row["hint"] and row["choices"] is None


def test_mmmu_options_string_literal_and_images_in_order():
    row = ADAPTERS["mmmu"]({"question_type": "multiple-choice", "options": "['a', \"b's\"]", "answer": "B",
                            "image_1": "p1", "image_2": None, "image_3": "p3"}, "w")
    assert row["choices"] == ["a", "b's"] and row["answer"] == "B" and row["mmmu_images"] == ["p1", "p3"]


def test_ai2d_answer_index_maps_to_letter_and_bad_index_fails():
    assert ADAPTERS["ai2d"]({"options": ["a", "b", "c"], "answer": "2"}, "w")["answer"] == "C"
    with pytest.raises(TaskDataError, match="not an index into 3 options"):
        ADAPTERS["ai2d"]({"options": ["a", "b", "c"], "answer": "3"}, "w")


def test_chartqa_list_label_becomes_a_string():
    assert ADAPTERS["chartqa"]({"label": ["42"]}, "w")["answer"] == "42"
    assert ADAPTERS["chartqa"]({"label": "7"}, "w")["answer"] == "7"


def test_lcb_private_tests_decode_from_base64_zlib_pickle():
    cases = [{"input": "1\n", "output": "2\n", "testtype": "stdin"}]
    blob = base64.b64encode(zlib.compress(pickle.dumps(json.dumps(cases)))).decode()
    assert decode_lcb_tests(blob, "w") == cases
    assert decode_lcb_tests(json.dumps(cases), "w") == cases


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_lcb_decoder_refuses_pickled_objects():
    blob = base64.b64encode(zlib.compress(pickle.dumps(_Evil()))).decode()
    with pytest.raises(TaskDataError, match="refusing to load builtins.print"):
        decode_lcb_tests(blob, "w")


def test_lcb_functional_problem_gets_fn_name_and_starter_block():
    row = ADAPTERS["livecodebench"]({"public_test_cases": "[]", "private_test_cases": json.dumps(
        [{"input": "1", "output": "1", "testtype": "functional"}]), "metadata": '{"func_name": "f"}',
        "starter_code": "class Solution:\n    def f(self, x): "}, "w")
    assert row["fn_name"] == "f" and "class Solution" in row["starter_block"] and len(row["tests"]) == 1


def test_mbpp_asserts_are_wrapped_in_check_and_the_entry_point_found():
    row = ADAPTERS["mbpp"]({"code": "def helper():\n  pass\ndef add(a, b):\n  return a + b",
                            "test_list": ["assert add(1, 2) == 3"], "test_setup_code": "import math"}, "w")
    assert row["entry_point"] == "add"
    ns = {}
    exec(row["tests"] + "\ndef add(a, b):\n    return a + b\n", ns)
    ns["check"](ns["add"])
    assert row["tests"].startswith("def check(candidate):\n    import math\n    assert add(1, 2) == 3")
