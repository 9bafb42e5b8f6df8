"""Score a rollout's completions with weighted reward functions in a worker pool.

Slow verifiers (code run in a sandbox, math-verify in its process pool) release the GIL while they wait, so a
thread pool over chunks of the batch keeps the training loop from scoring sample after sample.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from sapo_vl.rewards.registry import combine_rewards

_SKIP_COLUMNS = {"images"}


def record_columns(records: list[dict]) -> dict[str, list]:
    """TRL-style columns: every record key (except images) as a list, one value per completion."""
    keys = sorted({k for r in records for k in r} - _SKIP_COLUMNS)
    columns = {k: [r.get(k) for r in records] for k in keys}
    columns["prompts"] = [r.get("prompt") for r in records]
    return columns


class RewardPool:
    """``score(completions, records) -> (totals, components)``; a None total (no function applies) is 0.0 and
    counted in ``last_not_applicable``."""

    def __init__(self, funcs: dict[str, float], *, num_workers: int = 4, chunk_size: int = 16):
        self.combined = combine_rewards(dict(funcs))
        self.names = [name for name, _, _ in self.combined.items]
        self.num_workers, self.chunk_size = max(1, num_workers), max(1, chunk_size)
        self._pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="sapo-reward")
        self.last_not_applicable = 0

    def _score_chunk(self, completions: list[str], records: list[dict]):
        return self.combined.breakdown(completions, **record_columns(records))

    def score(self, completions: list[str], records: list[dict]) -> tuple[list[float], dict[str, list]]:
        if len(completions) != len(records):
            raise ValueError(f"{len(completions)} completions but {len(records)} records")
        starts = range(0, len(completions), self.chunk_size)
        futures = [self._pool.submit(self._score_chunk, completions[s:s + self.chunk_size],
                                     records[s:s + self.chunk_size]) for s in starts]
        totals: list[float] = []
        components: dict[str, list] = {name: [] for name in self.names}
        not_applicable = 0
        for fut in futures:
            part = fut.result()
            for value in part.total:
                not_applicable += value is None
                totals.append(0.0 if value is None else float(value))
            for name in self.names:
                components[name].extend(part.components[name])
        self.last_not_applicable = not_applicable
        return totals, components

    def close(self) -> None:
        self._pool.shutdown(wait=True)
