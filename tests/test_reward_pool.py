"""The reward pool: weighted sums of registered (TRL-style) reward functions, scored in a thread pool, in order."""

import threading
import time

import pytest

from sapo_vl.rewards.pool import RewardPool, record_columns


def _records(n, images=()):
    """Plain-text records (their completions reach a reward as strings); ``images`` makes their prompts chats."""
    return [{"id": f"r{i}", "prompt": f"question {i}", "images": list(images), "answer": str(i), "reward": "vqa",
             "meta": {"i": i}, "difficulty": i % 3} for i in range(n)]




def test_total_is_the_weighted_sum_of_the_functions(register):
    register("t_length", lambda completions, **kw: [float(len(c)) for c in completions])
    register("t_one", lambda completions, **kw: [1.0] * len(completions))
    pool = RewardPool({"t_length": 0.5, "t_one": 2.0})
    totals, comps = pool.score(["ab", "abcd", ""], _records(3))
    assert totals == [3.0, 4.0, 2.0]
    assert comps == {"t_length": [2.0, 4.0, 0.0], "t_one": [1.0, 1.0, 1.0]}
    assert pool.names == ["t_length", "t_one"]


def test_builtin_verifier_scores_against_the_record_answer():
    records = [{"id": "a", "prompt": "Color?", "answer": "red"}, {"id": "b", "prompt": "Color?", "answer": "blue"}]
    pool = RewardPool({"vqa": 1.0})
    totals, _ = pool.score(["red", "red"], records)
    assert totals == [1.0, 0.0]


def test_none_components_are_skipped_and_an_all_none_total_is_zero_and_counted(register):
    register("t_maybe", lambda completions, **kw: [None if c == "skip" else 1.0 for c in completions])
    register("t_never", lambda completions, **kw: [None if c != "x" else 0.5 for c in completions])
    pool = RewardPool({"t_maybe": 1.0, "t_never": 4.0})
    totals, comps = pool.score(["a", "skip", "x"], _records(3))
    assert totals == [1.0, 0.0, 3.0]
    assert comps == {"t_maybe": [1.0, None, 1.0], "t_never": [None, None, 0.5]}
    assert pool.last_not_applicable == 1
    pool.score(["a"], _records(1))
    assert pool.last_not_applicable == 0  # per call


def test_functions_receive_record_columns_trl_style(register):
    seen = {}

    def spy(completions, answer, prompts, difficulty, **kwargs):
        seen.update(answer=answer, prompts=prompts, difficulty=difficulty, keys=set(kwargs))
        return [0.0] * len(completions)

    register("t_spy", spy)
    records = _records(3, images=[object()])
    pool = RewardPool({"t_spy": 1.0}, chunk_size=8)
    pool.score(["a", "b", "c"], records)
    assert seen["answer"] == ["0", "1", "2"] and seen["difficulty"] == [0, 1, 2]
    chats = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"question {i}"}]}]
             for i in range(3)]
    assert seen["prompts"] == chats  # a prompt with images is a chat
    assert {"id", "prompt", "reward", "meta"} <= seen["keys"] and "images" not in seen["keys"]


def test_record_columns_fill_missing_keys_with_none():
    columns = record_columns([{"id": "a", "prompt": "p", "extra": 1}, {"id": "b", "prompt": [{"role": "user"}]}])
    assert columns["extra"] == [1, None] and columns["prompts"] == ["p", [{"role": "user"}]]


def test_order_is_kept_across_chunks_and_workers(register):
    threads = set()

    def slow_identity(completions, answer, **kwargs):  # later chunks finish first
        threads.add(threading.get_ident())
        time.sleep(0.001 * (30 - int(answer[0])))
        return [float(a) for a in answer]

    register("t_slow", slow_identity)
    n = 23
    pool = RewardPool({"t_slow": 1.0}, num_workers=4, chunk_size=3)
    totals, comps = pool.score([str(i) for i in range(n)], _records(n))
    assert totals == [float(i) for i in range(n)] and comps["t_slow"] == totals
    assert len(threads) > 1  # the chunks really ran on several workers


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 completions but 1 records"):
        RewardPool({"vqa": 1.0}).score(["a", "b"], _records(1))


def test_unknown_reward_name_is_an_error():
    with pytest.raises(ValueError, match="unknown reward 'nope'"):
        RewardPool({"nope": 1.0})
