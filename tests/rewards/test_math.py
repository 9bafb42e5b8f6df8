"""Math verifier: answer extraction, equivalence through math-verify, time bounds, threads, and the reward."""

import multiprocessing
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import CancelledError, ThreadPoolExecutor

import pytest

from sapo_vl.rewards import _pool
from sapo_vl.rewards._pool import get_pool
from sapo_vl.rewards.math import extract_answer, fast_equal, math_equal, math_equal_many, math_reward


@pytest.fixture(scope="module", autouse=True)
def warm_pool():
    get_pool().warm_up()  # worker start-up is not part of any check's deadline


# --- extraction ----------------------------------------------------------------------------------------------------

def test_extract_boxed_nested_braces():
    assert extract_answer(r"so $\boxed{\frac{1}{\sqrt{2}}}$ done") == r"\frac{1}{\sqrt{2}}"


def test_extract_last_boxed_wins():
    assert extract_answer(r"first \boxed{1}, corrected: \boxed{2}") == "2"


def test_extract_fbox():
    assert extract_answer(r"\fbox{7}") == "7"


def test_extract_boxed_without_braces():
    assert extract_answer(r"The answer is $\boxed 5$.") == "5"


def test_extract_boxed_with_escaped_braces():
    assert extract_answer(r"\boxed{\{1, 2\}}") == r"\{1, 2\}"


def test_extract_unclosed_boxed_is_skipped():
    assert extract_answer(r"\boxed{3} then \boxed{\frac{1}{2}") == "3"


def test_extract_empty_last_boxed_falls_back_to_previous_box():
    assert extract_answer(r"\boxed{4} \boxed{ }") == "4"


def test_extract_boxed_beats_answer_block():
    assert extract_answer(r"<answer>5</answer> wait \boxed{6}") == "6"


def test_extract_answer_block():
    assert extract_answer("<think>2+2</think><answer> 4 </answer>") == "4"


def test_extract_answer_block_with_dollars():
    assert extract_answer("<answer>$x = 3$</answer>") == "x = 3"


def test_extract_unclosed_think_is_none():
    assert extract_answer(r"<think>maybe \boxed{4} <answer>4</answer>") is None


def test_extract_ignores_boxed_inside_think():
    assert extract_answer(r"<think>\boxed{1}</think> The answer is 2.") == "2"


def test_extract_close_think_only_template_style():
    assert extract_answer(r"reasoning \boxed{1}</think>\boxed{9}") == "9"


def test_extract_answer_is_fallback():
    assert extract_answer(r"Thus the final answer is $\frac{3}{4}$.") == r"\frac{3}{4}"


def test_extract_answer_colon_fallback_markdown():
    assert extract_answer("**Answer:** 12\nBecause...") == "12"


def test_extract_fallback_takes_last_cue():
    assert extract_answer("The answer is 3. Hmm, no. The answer is 5.") == "5"


def test_extract_fallback_can_be_disabled():
    assert extract_answer("The answer is 5.", fallback=False) is None


def test_extract_custom_fallback_patterns():
    assert extract_answer("Result => 8", fallback=[r"result\s*=>"]) == "8"
    assert extract_answer("The answer is 8", fallback=[r"result\s*=>"]) is None


def test_extract_nothing_is_none():
    assert extract_answer("I have no idea.") is None


# --- equivalence ---------------------------------------------------------------------------------------------------

EQUAL = [
    ("0.5", "1/2"),
    ("0.5", r"\frac{1}{2}"),
    (r"\dfrac{1}{2}", r"\frac12"),
    (r"\tfrac{1}{2}", "0.5"),
    ("-0.5", r"-\frac{1}{2}"),
    (r"\frac{-1}{2}", r"-\frac12"),
    ("0.333333", r"\frac{1}{3}"),
    ("3.0", "3"),
    ("1e-3", "0.001"),
    ("1,000", "1000"),
    ("10^{3}", "1000"),
    ("0.5", r"50\%"),
    ("50", r"50\%"),
    (r"\{2, 1\}", r"\{1, 2\}"),
    ("2, 1", "1, 2"),
    ("1 and 2", r"\{1,2\}"),
    ("(1, 2]", "(1,2]"),
    (r"(-\infty, 3)", r"(-\infty,3)"),
    ("3", "x=3"),
    ("x = 3", "3"),
    (r"\sqrt{18}", r"3\sqrt{2}"),
    (r"\frac{1}{\sqrt{2}}", r"\frac{\sqrt{2}}{2}"),
    (r"\sin(\pi/3)", r"\frac{\sqrt{3}}{2}"),
    ("(x+1)^2", "x^2+2x+1"),
    ("3.14159265", r"\pi"),
    (r"\pi \cdot 2", r"2\pi"),
    ("5 cm", "5"),
    (r"5\text{ cm}", "5"),
    (r"\$5.00", "5"),
    (r"90^\circ", "90"),
    (r"\text{(B)}", "B"),
    (r"\infty", r"\infty"),
    ("-7", "-7"),
]

NOT_EQUAL = [
    ("-3", "3"),
    ("2", "3"),
    ("0.33", "1/3"),
    ("3.14", r"\pi"),
    (r"\frac{1}{3}", r"\frac{1}{2}"),
    ("[1, 2]", "(1, 2)"),
    ("(1, 2)", "[1, 2)"),
    ("x+1", "x+2"),
    ("2y", "2x"),
    ("y = 3", "x = 3"),
    (r"\{1, 2, 3\}", r"\{1, 2\}"),
    (r"\sqrt{2}", "2"),
    ("", "0"),
    ("I don't know", "5"),
]


@pytest.mark.parametrize(("pred", "gold"), EQUAL)
def test_math_equal_accepts_equivalent(pred, gold):
    assert math_equal(pred, gold) is True


@pytest.mark.parametrize(("pred", "gold"), NOT_EQUAL)
def test_math_equal_rejects_different(pred, gold):
    assert math_equal(pred, gold) is False


def test_math_equal_none_prediction_is_false():
    assert math_equal(None, "1") is False


def test_math_equal_accepts_numeric_gold():
    assert math_equal("0.5", 0.5) is True


def test_fast_path_decides_integers_and_identical_strings_only():
    assert fast_equal("12", "12") is True
    assert fast_equal("12", "13") is False
    assert fast_equal(r"\left( 1, 2 \right)", "(1,2)") is True
    assert fast_equal("12.0", "12") is True
    assert fast_equal("1/2", "0.5") is None  # needs math-verify
    assert fast_equal("1 2", "12") is None  # spaces between digits are not dropped


def test_math_equal_same_answers_off_main_thread():
    pairs = EQUAL[:8] + NOT_EQUAL[:6]
    expected = [math_equal(p, g) for p, g in pairs]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda pg: math_equal(pg[0], pg[1]), pairs))
    assert got == expected
    assert got == [True] * 8 + [False] * 6


def test_math_equal_in_a_plain_thread_uses_math_verify():
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", math_equal(r"\{3, 1\}", r"\{1, 3\}")))
    t.start()
    t.join()
    assert out["r"] is True


@pytest.mark.parametrize("bomb", [r"9^{9^{9^{9}}}", r"(10^{10})!"])
def test_pathological_expression_is_false_within_its_deadline(bomb):
    start = time.monotonic()
    assert math_equal(bomb, "5", timeout_s=0.5) is False
    assert time.monotonic() - start < 5.0  # never hangs: 0.5 s deadline, kill, done


def test_pathological_expression_off_main_thread_is_false():
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(math_equal, r"10^{10^{10}}", "7", timeout_s=0.5).result(timeout=30) is False


def test_pool_recovers_after_a_timeout():
    assert math_equal(r"2^{2^{2^{2^{2^{2}}}}}", "1", timeout_s=0.5) is False
    assert math_equal(r"\frac{2}{4}", "0.5") is True


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# The child starts a worker on an endless check and is SIGKILLed: the worker must not survive it.
_ORPHAN_SCRIPT = """
import multiprocessing, os, signal, threading
from sapo_vl.rewards import _pool as pool
p = pool.VerifierPool(1)
p.warm_up()
print(*[c.pid for c in multiprocessing.active_children()], flush=True)
threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
p.check_many([("9^{9^{9^{9}}}", "1")], timeout_s=600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")
def test_worker_does_not_outlive_a_killed_parent():
    out = subprocess.run(
        [sys.executable, "-c", _ORPHAN_SCRIPT], capture_output=True, text=True, timeout=120
    )
    worker_pids = [int(pid) for pid in out.stdout.split()]
    assert worker_pids, out.stderr
    deadline = time.monotonic() + 10
    while any(map(_alive, worker_pids)) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive := [pid for pid in worker_pids if _alive(pid)]:
        for pid in alive:
            os.kill(pid, 9)  # clean up before failing
        pytest.fail("math-verify worker kept running after its parent was killed")


def _workers() -> list[int]:
    return [c.pid for c in multiprocessing.active_children()]


def test_pool_survives_a_worker_killed_while_idle():
    pool = _pool.VerifierPool(1)
    try:
        pool.warm_up()
        for pid in _workers():
            os.kill(pid, 9)
        time.sleep(0.5)
        assert pool.check_many([(r"\frac{1}{2}", "0.5"), ("x", "2")], timeout_s=30) == [True, False]
    finally:
        pool.close()


def test_closing_a_pool_stops_its_workers_and_releases_a_caller_mid_check():
    before = set(_workers())
    pool = _pool.VerifierPool(1)
    pool.warm_up()
    with ThreadPoolExecutor(1) as caller:
        check = caller.submit(pool.check_many, [(r"9^{9^{9^{9}}}", "1")], timeout_s=600)
        deadline = time.monotonic() + 30
        while not pool._pending and time.monotonic() < deadline:  # close mid-check, not before it is scheduled
            time.sleep(0.05)
        time.sleep(0.2)
        pool.close()
        with pytest.raises(CancelledError):
            check.result(timeout=10)
    assert not set(_workers()) - before


def test_math_equal_many_keeps_order():
    pairs = [("1/2", "0.5"), ("2", "3"), ("1/2", "0.5"), (None, "1")]
    assert math_equal_many(pairs) == [True, False, True, False]


# --- reward --------------------------------------------------------------------------------------------------------

def test_math_reward_scores_each_completion():
    completions = [r"\boxed{\frac{1}{2}}", "<answer>0.4</answer>", "no answer here", r"<think>\boxed{0.5}"]
    assert math_reward(completions, answer=["0.5"] * 4) == [1.0, 0.0, 0.0, 0.0]


def test_math_reward_none_answer_is_not_applicable():
    assert math_reward(["1", r"\boxed{1}"], answer=[None, "1"]) == [None, 1.0]


def test_math_reward_list_of_acceptable_answers():
    assert math_reward([r"\boxed{-2}", r"\boxed{5}"], answer=[["2", "-2"], ["2", "-2"]]) == [1.0, 0.0]


def test_math_reward_gold_solution_with_boxed():
    assert math_reward([r"\boxed{4}"], answer=[r"We get 2+2 = \boxed{4}."]) == [1.0]


def test_math_reward_conversational_completions():
    completions = [[{"role": "assistant", "content": r"\boxed{3}"}], [{"role": "assistant", "content": "4"}]]
    assert math_reward(completions, answer=["3", "3"]) == [1.0, 0.0]


def test_math_reward_ignores_extra_trl_kwargs():
    out = math_reward(
        completions=[r"\boxed{1}"], answer=["1"], prompts=["q"], completion_ids=[[1, 2]], trainer_state=None, x=[0]
    )
    assert out == [1.0]


def test_math_reward_missing_answer_column_is_a_clear_error():
    with pytest.raises(ValueError, match="'answer'"):
        math_reward([r"\boxed{1}"])


def test_math_reward_length_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="2 entries but there are 1 completions"):
        math_reward([r"\boxed{1}"], answer=["1", "2"])
