"""Reward registry: contents, registration, errors, routing, combination, TRL compatibility and doc examples."""

import doctest
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from sapo_vl.errors import UnknownNameError
from sapo_vl.rewards import REWARDS, combine_rewards, math_equal, register_reward
from sapo_vl.rewards.vqa import VQA_METRICS


@pytest.fixture
def scratch_registry():
    """Let a test register functions without leaking them into other tests (``register_reward`` is bound to the
    one ``REWARDS`` object, so its contents are restored rather than the object swapped)."""
    saved = dict(REWARDS)
    yield REWARDS
    REWARDS.clear()
    REWARDS.update(saved)


def test_registry_has_the_contract_names():
    assert {"math", "mcq", "vqa", "format", "code"} <= set(REWARDS)


def test_an_unknown_reward_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown reward 'maths'.*format.*math.*mcq"):
        REWARDS["maths"]


def test_unknown_reward_name_is_one_user_error_that_suggests_the_closest():
    with pytest.raises(UnknownNameError) as info:
        REWARDS["format_lenent"]
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    message = str(info.value)
    assert message.startswith("unknown reward 'format_lenent'; registered rewards: auto, code, format, ")
    assert message.endswith(" (did you mean 'format_lenient'?)")
    with pytest.raises(UnknownNameError, match="did you mean 'math'"):
        REWARDS["maths"]


def test_register_plain_trl_reward_function_and_call_with_trl_kwargs(scratch_registry):
    def length_reward(completions, **kwargs):  # a TRL reward function, unchanged
        return [float(len(c)) for c in completions]

    register_reward("length", length_reward)
    fn = REWARDS["length"]
    out = fn(prompts=["p", "p"], completions=["ab", "abc"], completion_ids=[[1], [2]], answer=["x", "y"])
    assert out == [2.0, 3.0]


def test_register_reward_as_decorator(scratch_registry):
    @register_reward("const")
    def const(completions, **kwargs):
        return [1.0] * len(completions)

    assert REWARDS["const"] is const


def test_register_reward_refuses_silent_overwrite(scratch_registry):
    with pytest.raises(ValueError, match="already registered"):
        register_reward("math", lambda completions, **kw: [0.0] * len(completions))
    register_reward("math", lambda completions, **kw: [0.0] * len(completions), overwrite=True)
    assert REWARDS["math"](["x"]) == [0.0]


def test_every_builtin_reward_accepts_unknown_trl_kwargs():
    trl_kwargs = {"prompts": ["q"], "completion_ids": [[1, 2]], "trainer_state": object(), "image": [None]}
    assert REWARDS["math"](completions=[r"\boxed{2}"], answer=["2"], **trl_kwargs) == [1.0]
    assert REWARDS["mcq"](completions=["(A)"], answer=["A"], **trl_kwargs) == [1.0]
    assert REWARDS["vqa"](completions=["red"], answer=["red"], **trl_kwargs) == [1.0]
    assert REWARDS["format"](completions=["<answer>a</answer>"], **trl_kwargs) == [1.0]
    assert REWARDS["format_lenient"](completions=["<answer>a</answer>"], **trl_kwargs) == [1.0]


def test_conversational_completions_accepted_everywhere():
    conv = [[{"role": "assistant", "content": "<answer>4</answer>"}]]
    assert REWARDS["math"](conv, answer=["4"]) == [1.0]
    assert REWARDS["vqa"](conv, answer=["four"]) == [1.0]
    assert REWARDS["format"](conv) == [1.0]


def test_code_entry_imports_lazily_and_forwards(monkeypatch):
    import sys
    import types

    calls = []
    fake = types.ModuleType("sapo_vl.rewards.code")
    fake.code_reward = lambda completions, **columns: calls.append(columns) or [0.5] * len(completions)
    monkeypatch.setitem(sys.modules, "sapo_vl.rewards.code", fake)
    assert REWARDS["code"](["print(1)"], tests=["assert True"]) == [0.5]
    assert calls == [{"tests": ["assert True"]}]


# ------------------------------------------------------------------ each verifier's extract is what it grades
def test_builtin_verifiers_say_which_answers_can_be_majority_voted():
    votable = {name: getattr(fn, "votable", None) for name, fn in REWARDS.items()}
    assert votable == {"math": True, "mcq": True, "vqa": True, "ordered_words": True, "ordered_words_partial": False,
                       "code": False, "format": False, "format_lenient": False,
                       "auto": None}  # auto routes; it has no answer of its own
    assert not hasattr(REWARDS["auto"], "extract")


@pytest.mark.parametrize(("text", "gold", "settings"), [
    (r"so \boxed{\frac{1}{2}}", "0.5", {}),
    ("<answer>0.4</answer>", "0.5", {}),
    ("The answer is 7.", "7", {}),
    ("The answer is 7.", "7", {"fallback": False}),  # no cue search: nothing read, nothing graded
    ("<think>\\boxed{7}", "7", {}),  # unclosed think block
])
def test_math_scores_one_exactly_when_its_extracted_answer_equals_the_gold(text, gold, settings):
    verifier = REWARDS["math"]
    extracted = verifier.extract(text, answer=gold, **settings)
    assert verifier([text], answer=[gold], **settings) == [float(math_equal(extracted, gold))]


@pytest.mark.parametrize(("text", "gold", "row"), [
    ("The answer is (B).", "B", {}),
    ("a dog", "B", {"choices": ["a cat", "a dog"]}),
    ("a dog", "B", {}),  # no option texts: nothing parses
    ("E", "A", {"letters": "ABCD"}),  # a letter outside the options
])
def test_mcq_scores_one_exactly_when_its_extracted_letter_is_the_gold(text, gold, row):
    verifier = REWARDS["mcq"]
    extracted = verifier.extract(text, answer=gold, **row)
    columns = {k: [v] for k, v in row.items() if k == "choices"}
    settings = {k: v for k, v in row.items() if k != "choices"}
    assert verifier([text], answer=[gold], **columns, **settings) == [float(extracted == gold)]


@pytest.mark.parametrize(("text", "gold"), [("<think>red?</think>Red.", "red"), ("red green blue", "red"),
                                            ("<answer>Two</answer>", "2"), ("<think>red", "red")])
def test_vqa_scores_its_extracted_answer_with_the_metric(text, gold):
    verifier = REWARDS["vqa"]
    extracted = verifier.extract(text, answer=gold)
    expected = VQA_METRICS["exact"](extracted, [gold]) if extracted else 0.0
    assert verifier([text], answer=[gold]) == [expected]


@pytest.mark.parametrize("name", ["format", "format_lenient"])
@pytest.mark.parametrize("text", ["<think>hm</think><answer>4</answer>", "Sure. <answer>4</answer> Thanks!",
                                  "<answer></answer>", "<think>hm <answer>4</answer>", "4"])
def test_format_scores_one_exactly_when_an_answer_block_is_extracted(name, text):
    verifier = REWARDS[name]
    extracted = verifier.extract(text)
    assert verifier([text]) == [float(extracted is not None)]
    assert extracted in (None, "4")


def test_format_extract_honours_the_reward_settings():
    text = "<answer>4</answer>"
    assert REWARDS["format"]([text], require_think=True) == [0.0]
    assert REWARDS["format"].extract(text, require_think=True) is None
    assert REWARDS["format"].extract(text) == "4"


@pytest.mark.parametrize("key", ["entry_point", "fn_name"])
def test_code_runs_exactly_the_program_its_extract_returns(monkeypatch, key):
    from sapo_vl.rewards import code as code_module

    text = "```python\ndef add(a, b):\n    return a + b\n```\nUsage:\n```python\nprint(add(1, 2))\n```"
    ran = []

    def fake_verify_many(codes, specs, cfg):
        ran.extend(codes)
        return [code_module.CodeVerdict([True], [], c) for c in codes]

    monkeypatch.setattr(code_module, "verify_many", fake_verify_many)
    row = {key: "add"}
    tests = "def check(candidate):\n    assert candidate(1, 2) == 3\n"
    assert REWARDS["code"]([text], tests=[tests], **{k: [v] for k, v in row.items()}) == [1.0]
    assert ran == [REWARDS["code"].extract(text, tests=tests, **row)]
    assert ran[0].startswith("def add(a, b):")


def test_importing_rewards_leaves_the_code_verifier_and_sandbox_unimported():
    probe = ("import sys, sapo_vl.rewards as r\n"
             "r.REWARDS['code']\n"
             "print(sorted(m for m in sys.modules if m in ('sapo_vl.rewards.code', 'sapo_vl.rewards.sandbox')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"


def test_auto_routes_by_reward_column_and_subsets_columns():
    completions = [r"\boxed{4}", "(B)", "red", "anything"]
    out = REWARDS["auto"](
        completions,
        reward=["math", "mcq", "vqa", None],
        answer=["4", "B", "red", "x"],
        choices=[None, ["cat", "dog"], None, None],
        prompts=["p"] * 4,
    )
    assert out == [1.0, 1.0, 1.0, None]


def test_auto_unknown_reward_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown reward 'nope'"):
        REWARDS["auto"](["x"], reward=["nope"], answer=["x"])


def test_combine_weighted_sum_and_breakdown():
    combined = combine_rewards([("math", 1.0), ("format", 0.5)])
    completions = ["<answer>4</answer>", r"\boxed{4}", "<answer>5</answer>"]
    result = combined.breakdown(completions, answer=["4", "4", "4"])
    assert result.components == {"math": [1.0, 1.0, 0.0], "format": [1.0, 0.0, 1.0]}
    assert result.total == [1.5, 1.0, 0.5]
    assert combined(completions, answer=["4", "4", "4"]) == [1.5, 1.0, 0.5]


def test_combine_none_is_not_applicable():
    def only_first(completions, **kwargs):
        return [1.0] + [None] * (len(completions) - 1)

    def never(completions, **kwargs):
        return [None] * len(completions)

    assert combine_rewards([(only_first, 2.0), (never, 1.0)])(["a", "b"]) == [2.0, None]


def test_combine_normalize_is_weighted_mean_over_applicable():
    def half(completions, **kwargs):
        return [0.5, None]

    def one(completions, **kwargs):
        return [1.0, 1.0]

    combined = combine_rewards([(half, 1.0), (one, 3.0)], normalize=True)
    assert combined(["a", "b"]) == [pytest.approx((0.5 + 3.0) / 4.0), 1.0]


def test_combine_accepts_mapping_names_and_bare_functions():
    def const(completions, **kwargs):
        return [1.0] * len(completions)

    combined = combine_rewards([const, "format", const])
    assert combined.__name__ == "combined(const+format+const#2)"
    assert combine_rewards({"format": 2.0})(["<answer>a</answer>"]) == [2.0]


def test_combine_rejects_wrong_output_length():
    def broken(completions, **kwargs):
        return [1.0]

    with pytest.raises(ValueError, match="reward 'broken' must return a list of 2 values"):
        combine_rewards([broken])(["a", "b"])


def test_combine_rejects_bad_weight_and_unknown_name():
    with pytest.raises(ValueError, match="finite number"):
        combine_rewards([("format", float("nan"))])
    with pytest.raises(ValueError, match="unknown reward"):
        combine_rewards(["nope"])


def _has_code_module() -> bool:
    return importlib.util.find_spec("sapo_vl.rewards.code") is not None


@pytest.mark.parametrize("name", sorted(REWARDS))
def test_registered_reward_docstring_example_runs(name):
    fn = REWARDS[name]
    assert fn.__doc__ and ">>>" in fn.__doc__, f"reward {name!r} needs a doctest example"
    if name == "code" and not _has_code_module():
        pytest.skip("sapo_vl.rewards.code is not present")
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(fn, name, globs=vars(importlib.import_module(fn.__module__)).copy()):
        runner.run(test)
    assert runner.failures == 0
    assert runner.tries > 0 or name == "code"


@pytest.mark.parametrize("module", ["text", "math", "vqa", "format", "registry", "verifier"])
def test_module_doc_examples_run(module):
    mod = importlib.import_module(f"sapo_vl.rewards.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0


def test_numpy_scalars_and_arrays_from_a_trl_function_are_accepted_nan_is_not():
    import numpy as np

    from sapo_vl.rewards.registry import _check_output

    assert _check_output([np.float32(0.5), np.int64(1), None], 3, "f") == [0.5, 1.0, None]
    assert _check_output(np.array([0.25, 1.0]), 2, "f") == [0.25, 1.0]
    with pytest.raises(ValueError, match=r"returned np.float64\(nan\) for sample 0"):
        _check_output([np.float64("nan")], 1, "f")
