"""Score a rollout's completions with weighted reward functions, called as TRL calls them, under a deadline.

Each function is called once per chunk of the batch with TRL's keyword arguments (``registry.call_reward``):
``prompts`` (``sapo_vl.chat.reward_prompt``: messages for a conversational prompt, and a prompt with images is
one), ``completions`` in their prompt's format (the text for a plain-text prompt, ``[{"role": "assistant",
"content": text}]`` for a conversational one), ``completion_ids``, every record column but images, ``trainer_state``,
``log_metric(name, value)`` (averaged over the step's calls into ``reward/<function>/<name>``) and
``log_extra(column, values)`` (a column beside each sample). Synchronous functions run on worker threads (slow
verifiers release the GIL while they wait); ``async def`` ones run concurrently on the pool's one event loop.
A reward that never returns must not hang training: each ``score`` call has a wall-clock budget
(``reward.timeout_s``); the chunks not scored by then are reported as timed out (the caller scores them as
configured) and their coroutines cancelled, and SIGTERM is honoured while waiting (``stop``). The worker threads are
daemons made per call, so a hung one is abandoned, never joined at exit.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import weakref
from collections import defaultdict
from functools import partial

from sapo_vl.chat import reward_completions, reward_prompt
from sapo_vl.errors import Interrupted
from sapo_vl.rewards.registry import acall_reward, call_reward, combine_rewards, is_async

logger = logging.getLogger("sapo_vl.rewards")
_SKIP_COLUMNS = {"images"}


def record_columns(records: list[dict]) -> dict[str, list]:
    """TRL-style columns: every record key (except images) as a list, one value per completion."""
    keys = sorted({k for r in records for k in r} - _SKIP_COLUMNS)
    columns = {k: [r.get(k) for r in records] for k in keys}
    columns["prompts"] = [reward_prompt(r) for r in records]
    return columns


class RewardPool:
    """``score(completions, records) -> (totals, components)``. A None total (no function applies) is 0.0 and
    counted in ``last_not_applicable``; samples whose chunk missed the deadline are listed in
    ``last_timed_out`` (total 0.0, every component None). ``last_metrics`` and ``last_extra`` hold what the
    functions logged."""

    def __init__(self, funcs: dict[str, float], *, num_workers: int = 4, chunk_size: int = 16,
                 timeout_s: float | None = None):
        self.combined = combine_rewards(dict(funcs))
        self.names = [name for name, _, _ in self.combined.items]
        self.num_workers, self.chunk_size, self.timeout_s = max(1, num_workers), max(1, chunk_size), timeout_s
        self.last_not_applicable = 0
        self.last_timed_out: list[int] = []
        self.last_metrics: dict[str, float] = {}
        self.last_extra: dict[str, list] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def _calls(self, completions, records, completion_ids, trainer_state, logged, extra) -> dict:
        """``{(chunk start, function name): (fn, keyword arguments)}``."""
        def log_extra(rows: range, column: str, values: list) -> None:
            column_values = extra.setdefault(column, [None] * len(completions))
            for i, value in zip(rows, values):
                if value is not None:  # several calls may fill one column (auto: each its own samples)
                    column_values[i] = value

        calls = {}
        for start in range(0, len(completions), self.chunk_size):
            end = start + self.chunk_size
            columns = record_columns(records[start:end])
            kwargs = {**columns, "trainer_state": trainer_state,
                      "completion_ids": None if completion_ids is None else completion_ids[start:end],
                      "completions": reward_completions(completions[start:end], columns["prompts"])}
            for name, fn, _ in self.combined.items:
                calls[start, name] = fn, {
                    **kwargs, "log_extra": partial(log_extra, range(start, min(end, len(completions)))),
                    "log_metric": lambda metric, value, n=name: logged[f"reward/{n}/{metric}"].append(float(value))}
        return calls

    def _work(self, tasks: queue.Queue, calls: dict, finish) -> None:
        while True:
            try:
                key = tasks.get_nowait()
            except queue.Empty:
                return
            try:
                value = call_reward(key[1], *calls[key])
            except BaseException as exc:  # re-raised by the caller's thread
                value = exc
            finish(key, value)

    async def _gather(self, calls: dict, finish) -> None:
        async def one(key):
            try:
                value = await acall_reward(key[1], *calls[key])
            except Exception as exc:  # re-raised by the caller's thread (a cancellation passes through)
                value = exc
            finish(key, value)

        await asyncio.gather(*(one(key) for key in calls))

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        """The one loop every ``async def`` reward of this pool runs on (clients they keep stay on their loop)."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            threading.Thread(target=self._loop.run_forever, daemon=True, name="sapo-reward-loop").start()
            weakref.finalize(self, self._loop.call_soon_threadsafe, self._loop.stop)  # stops with the pool
        return self._loop

    def _run(self, calls: dict, stop=None) -> dict:
        results: dict = {}
        done = threading.Condition()

        def finish(key, value):
            with done:
                results[key] = value
                done.notify()

        tasks: queue.Queue = queue.Queue()
        for key, (fn, _) in calls.items():
            if not is_async(fn):
                tasks.put(key)
        for _ in range(min(self.num_workers, tasks.qsize())):
            threading.Thread(target=self._work, args=(tasks, calls, finish), daemon=True, name="sapo-reward").start()
        async_calls = {key: call for key, call in calls.items() if is_async(call[0])}
        future = asyncio.run_coroutine_threadsafe(self._gather(async_calls, finish), self._event_loop()) \
            if async_calls else None
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        try:
            with done:
                while len(results) < len(calls):
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        break
                    if stop is not None and stop():
                        raise Interrupted("stop requested while scoring rewards")
                    done.wait(0.25 if left is None else min(0.25, left))
                results = dict(results)  # a hung worker may still write into the shared dict later
        finally:
            if future is not None:
                future.cancel()  # cuts off the coroutines still running (nothing when all are done)
        for value in results.values():
            if isinstance(value, BaseException):
                raise value
        return results

    def score(self, completions: list[str], records: list[dict], stop=None, *, completion_ids: list | None = None,
              trainer_state=None) -> tuple[list[float], dict[str, list]]:
        if len(completions) != len(records):
            raise ValueError(f"{len(completions)} completions but {len(records)} records")
        logged: dict[str, list[float]] = defaultdict(list)
        extra: dict[str, list] = {}
        results = self._run(self._calls(completions, records, completion_ids, trainer_state, logged, extra), stop)
        self.last_metrics = {key: sum(values) / len(values) for key, values in list(logged.items()) if values}
        self.last_extra = {column: list(values) for column, values in list(extra.items())}
        totals: list[float] = []
        components: dict[str, list] = {name: [] for name in self.names}
        self.last_not_applicable, self.last_timed_out = 0, []
        for start in range(0, len(completions), self.chunk_size):
            n = len(completions[start:start + self.chunk_size])
            parts = {name: results.get((start, name)) for name in self.names}
            if any(part is None for part in parts.values()):  # missed the deadline
                self.last_timed_out.extend(range(start, start + n))
                parts = {name: [None] * n for name in self.names}
                totals.extend([0.0] * n)
            else:
                for value in self.combined.total(parts, n):
                    self.last_not_applicable += value is None
                    totals.append(0.0 if value is None else float(value))
            for name in self.names:
                components[name].extend(parts[name])
        if self.last_timed_out:
            logger.warning("reward scoring timed out after %.0f s for %d of %d samples (e.g. record %r); they "
                           "score 0", self.timeout_s, len(self.last_timed_out), len(completions),
                           records[self.last_timed_out[0]].get("id"))
        return totals, components
