"""The reward step calls every function as TRL does: the whole keyword set (or what the signature names), completions
in their prompt's format, log_metric / log_extra collected; async functions run concurrently under the same
deadline and stop signal as synchronous ones."""

import asyncio
import time

import pytest

from sapo_vl.errors import Interrupted
from sapo_vl.rewards import combine_rewards
from sapo_vl.rewards.pool import RewardPool

CHAT = [{"role": "user", "content": "Colour?"}]


def _records(n, prompt="Colour?"):
    return [{"id": f"r{i}", "prompt": prompt, "answer": str(i), "images": []} for i in range(n)]




def test_a_kwargs_function_gets_the_whole_trl_keyword_set(register):
    seen = {}

    def spy(**kwargs):
        seen.update(kwargs)
        return [0.0] * len(kwargs["completions"])

    register("t_spy", spy)
    state = object()
    RewardPool({"t_spy": 1.0}).score(["a", "b"], _records(2), completion_ids=[[1], [2, 3]], trainer_state=state)
    assert {"prompts", "completions", "completion_ids", "trainer_state", "log_metric", "log_extra", "answer",
            "id"} <= set(seen) and "images" not in seen
    assert seen["prompts"] == ["Colour?"] * 2 and seen["completion_ids"] == [[1], [2, 3]]
    assert seen["trainer_state"] is state and seen["answer"] == ["0", "1"]


def test_a_function_gets_only_the_arguments_its_signature_names(register):
    register("t_narrow", lambda completion_ids, answer: [len(i) + float(a) for i, a in zip(completion_ids, answer)])
    totals, _ = RewardPool({"t_narrow": 1.0}).score(["a", "b"], _records(2), completion_ids=[[1], [2, 3]])
    assert totals == [1.0, 3.0]


def test_completions_come_in_their_prompts_format(register):
    seen = []
    register("t_seen", lambda completions, **kw: seen.extend(completions) or [0.0] * len(completions))
    records = _records(1) + _records(1, prompt=CHAT)
    RewardPool({"t_seen": 1.0}).score(["red", "blue"], records)
    assert seen == ["red", [{"role": "assistant", "content": "blue"}]]


def test_logged_metrics_are_averaged_per_function_and_extra_columns_follow_their_samples(register):
    def judge(completions, log_metric, log_extra, **kw):
        log_metric("len", sum(len(c) for c in completions) / len(completions))
        log_extra("upper", [c.upper() for c in completions])
        return [1.0] * len(completions)

    register("t_judge", judge)
    pool = RewardPool({"t_judge": 1.0}, chunk_size=2)
    pool.score(["a", "bb", "ccc"], _records(3))
    assert pool.last_metrics == {"reward/t_judge/len": 2.25}  # chunks [a, bb] and [ccc]: mean of 1.5 and 3
    assert pool.last_extra == {"upper": ["A", "BB", "CCC"]}
    pool.score(["a"], _records(1))
    assert pool.last_extra == {"upper": ["A"]}  # per call


def test_auto_routes_with_the_contract_and_spreads_a_subsets_extra_column(register):
    def tagged(completions, completion_ids, log_extra):
        log_extra("n_ids", [len(i) for i in completion_ids])
        return [1.0] * len(completions)

    register("t_tagged", tagged)
    records = [{**_records(1)[0], "reward": "t_tagged"}, {**_records(1)[0], "reward": "vqa", "answer": "red"}]
    pool = RewardPool({"auto": 1.0})
    totals, _ = pool.score(["x", "red"], records, completion_ids=[[1, 2], [3]])
    assert totals == [1.0, 1.0] and pool.last_extra == {"n_ids": [2, None]}


def test_an_async_function_also_works_outside_the_pool(register):
    async def later(completions, **kw):
        await asyncio.sleep(0)
        return [2.0] * len(completions)

    assert combine_rewards([(later, 1.0)])(["a"]) == [2.0]


def test_async_functions_run_concurrently_within_a_step(register):
    async def slow(completions, **kw):
        await asyncio.sleep(0.4)
        return [1.0] * len(completions)

    async def slower(completions, **kw):
        await asyncio.sleep(0.4)
        return [0.5] * len(completions)

    register("t_slow", slow)
    register("t_slower", slower)
    pool = RewardPool({"t_slow": 1.0, "t_slower": 2.0}, chunk_size=2)  # 3 chunks x 2 functions = 6 calls
    t0 = time.monotonic()
    totals, _ = pool.score(list("abcdef"), _records(6))
    assert totals == [2.0] * 6 and time.monotonic() - t0 < 1.2  # about one call's time, not 2.4 s
    pool.score(["a"], _records(1))  # the pool's one event loop serves the next step too


def test_a_hung_async_function_is_cut_off_at_the_deadline_and_cancelled(register):
    cancelled = []

    async def hung(completions, **kw):
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return [1.0] * len(completions)

    register("t_hung", hung)
    pool = RewardPool({"t_hung": 1.0, "vqa": 1.0}, timeout_s=0.3)
    t0 = time.monotonic()
    totals, comps = pool.score(["a", "b"], _records(2))
    assert time.monotonic() - t0 < 2 and totals == [0.0, 0.0] and pool.last_timed_out == [0, 1]
    assert comps == {"t_hung": [None, None], "vqa": [None, None]}
    deadline = time.monotonic() + 2
    while not cancelled and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cancelled == [True]


def test_a_stop_signal_interrupts_an_async_function(register):
    async def hung(completions, **kw):
        await asyncio.sleep(60)

    register("t_hung", hung)
    pool = RewardPool({"t_hung": 1.0})
    t0 = time.monotonic()
    with pytest.raises(Interrupted):
        pool.score(["a"], _records(1), stop=lambda: time.monotonic() - t0 > 0.2)
    assert time.monotonic() - t0 < 2


def test_an_async_functions_error_reaches_the_caller(register):
    async def broken(completions, **kw):
        raise RuntimeError("judge down")

    register("t_broken", broken)
    with pytest.raises(RuntimeError, match="judge down"):
        RewardPool({"t_broken": 1.0}).score(["a"], _records(1))
