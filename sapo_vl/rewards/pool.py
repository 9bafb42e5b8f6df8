"""Score a rollout's completions with weighted reward functions on worker threads, under a deadline.

Slow verifiers (code run in a sandbox, math-verify in its process pool) release the GIL while they wait, so threads
over chunks of the batch keep the training loop from scoring sample after sample. A reward function that never
returns must not hang training: each ``score`` call has a wall-clock budget (``reward.timeout_s``); the chunks not
done by then are reported as timed out (the caller scores them as configured), and SIGTERM is honoured while
waiting (``stop``). The workers are daemon threads made per call, so a hung one is abandoned, never joined at exit.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from sapo_vl.errors import Interrupted
from sapo_vl.rewards.registry import combine_rewards

logger = logging.getLogger("sapo_vl.rewards")
_SKIP_COLUMNS = {"images"}


def record_columns(records: list[dict]) -> dict[str, list]:
    """TRL-style columns: every record key (except images) as a list, one value per completion."""
    keys = sorted({k for r in records for k in r} - _SKIP_COLUMNS)
    columns = {k: [r.get(k) for r in records] for k in keys}
    columns["prompts"] = [r.get("prompt") for r in records]
    return columns


class RewardPool:
    """``score(completions, records) -> (totals, components)``. A None total (no function applies) is 0.0 and
    counted in ``last_not_applicable``; samples whose chunk missed the deadline are listed in
    ``last_timed_out`` (total 0.0, every component None)."""

    def __init__(self, funcs: dict[str, float], *, num_workers: int = 4, chunk_size: int = 16,
                 timeout_s: float | None = None):
        self.combined = combine_rewards(dict(funcs))
        self.names = [name for name, _, _ in self.combined.items]
        self.num_workers, self.chunk_size, self.timeout_s = max(1, num_workers), max(1, chunk_size), timeout_s
        self.last_not_applicable = 0
        self.last_timed_out: list[int] = []

    def _work(self, tasks: queue.Queue, completions, records, results: dict, done: threading.Condition) -> None:
        while True:
            try:
                start = tasks.get_nowait()
            except queue.Empty:
                return
            end = start + self.chunk_size
            try:
                value = self.combined.breakdown(completions[start:end], **record_columns(records[start:end]))
            except BaseException as exc:  # re-raised by the caller's thread
                value = exc
            with done:
                results[start] = value
                done.notify()

    def _run(self, completions: list[str], records: list[dict], stop=None) -> dict:
        starts = list(range(0, len(completions), self.chunk_size))
        tasks: queue.Queue = queue.Queue()
        for s in starts:
            tasks.put(s)
        results: dict = {}
        done = threading.Condition()
        for _ in range(min(self.num_workers, len(starts))):
            threading.Thread(target=self._work, args=(tasks, completions, records, results, done), daemon=True,
                             name="sapo-reward").start()
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        with done:
            while len(results) < len(starts):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                if stop is not None and stop():
                    raise Interrupted("stop requested while scoring rewards")
                done.wait(0.25 if left is None else min(0.25, left))
            results = dict(results)  # a hung worker may still write into the shared dict later
        for value in results.values():
            if isinstance(value, BaseException):
                raise value
        return results

    def score(self, completions: list[str], records: list[dict], stop=None) -> tuple[list[float], dict[str, list]]:
        if len(completions) != len(records):
            raise ValueError(f"{len(completions)} completions but {len(records)} records")
        results = self._run(completions, records, stop)
        totals: list[float] = []
        components: dict[str, list] = {name: [] for name in self.names}
        self.last_not_applicable, self.last_timed_out = 0, []
        for start in range(0, len(completions), self.chunk_size):
            n = len(completions[start:start + self.chunk_size])
            part = results.get(start)
            if part is None:  # missed the deadline
                self.last_timed_out.extend(range(start, start + n))
                totals.extend([0.0] * n)
                for name in self.names:
                    components[name].extend([None] * n)
                continue
            for value in part.total:
                self.last_not_applicable += value is None
                totals.append(0.0 if value is None else float(value))
            for name in self.names:
                components[name].extend(part.components[name])
        if self.last_timed_out:
            logger.warning("reward scoring timed out after %.0f s for %d of %d samples (e.g. record %r); they "
                           "score 0", self.timeout_s, len(self.last_timed_out), len(completions),
                           records[self.last_timed_out[0]].get("id"))
        return totals, components
