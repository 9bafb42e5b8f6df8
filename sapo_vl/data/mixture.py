"""Training data: one dataset or a weighted mixture of several, and the seeded sampler that picks each step's prompts.

``load_sources(data)`` builds every source of the ``data`` config section (``data.mixture``, or the single
``data.dataset``) with its train and held-out records. Each record is tagged with its source's name in the
``data_source`` column (verl's name for it), which per-source metrics group by; a source's ``reward`` replaces
its records' reward name (routed by the ``auto`` reward).

``MixtureSampler`` draws a source per prompt with probability proportional to its weight, then takes the next record
of that source's own seeded, epoch-wise permutation. All ranks compute the same global order and take disjoint
slices of it; the state (draws so far, each source's epoch and position) is checkpointed, so a resumed run takes
exactly the records the uninterrupted run would have.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sapo_vl.data.records import Records
from sapo_vl.data.registry import load_dataset_by_name
from sapo_vl.errors import DataError
from sapo_vl.sections import DataSource

SOURCE_COLUMN = "data_source"
_STREAM = 1_000_003  # seed offset between sources' permutation streams (source 0 keeps the plain seed)


@dataclass
class Source:
    name: str
    weight: float
    train: Records
    eval: Records


def _entries(data) -> list:
    """The mixture entries of the ``data`` section; a single dataset is a mixture of one."""
    if data.mixture:
        return data.mixture
    return [DataSource(dataset=data.dataset, kwargs=data.kwargs, eval_kwargs=data.eval_kwargs)]


def _tagged(records: Records, name: str, reward: str | None) -> Records:
    for record in records:
        record[SOURCE_COLUMN] = name
        if reward is not None:
            record["reward"] = reward
    return records


def load_sources(data) -> list[Source]:
    """Build the train and held-out records of every source of the ``data`` config section."""
    sources = []
    for entry in _entries(data):
        name = entry.name or entry.dataset
        eval_dataset = entry.dataset if data.mixture else (data.eval_dataset or data.dataset)
        train = load_dataset_by_name(entry.dataset, split=entry.split or data.split, on_error=data.on_error,
                                     **entry.kwargs)
        eval_kwargs = {**entry.kwargs, **entry.eval_kwargs} if eval_dataset == entry.dataset else entry.eval_kwargs
        held_out = load_dataset_by_name(eval_dataset, split=entry.eval_split or data.eval_split,
                                        on_error=data.on_error, **eval_kwargs)
        if not train:
            raise DataError(f"data source {name!r} ({entry.dataset}) has no usable training records")
        sources.append(Source(name, float(entry.weight), _tagged(Records(train, getattr(train, "report", None)),
                                                                 name, entry.reward),
                              _tagged(Records(held_out, getattr(held_out, "report", None)), name, entry.reward)))
    return sources


class MixtureSampler:
    """Global record indices (into the sources' train records, concatenated in order) for each step."""

    def __init__(self, sizes: list[int], weights: list[float], seed: int, rank: int = 0, world: int = 1):
        if not sizes or min(sizes) < 1 or len(sizes) != len(weights):
            raise ValueError(f"need one size >= 1 and one weight per source, got sizes {sizes}, weights {weights}")
        self.sizes, self.seed, self.rank, self.world = list(sizes), seed, rank, world
        self.weights = torch.tensor(weights, dtype=torch.float64)
        self.offsets = [sum(sizes[:j]) for j in range(len(sizes))]
        self.draws = 0
        self.epoch, self.pos = [0] * len(sizes), [0] * len(sizes)
        self._perms: dict[tuple[int, int], list[int]] = {}

    def _perm(self, j: int) -> list[int]:
        key = (j, self.epoch[j])
        if key not in self._perms:
            g = torch.Generator().manual_seed(self.seed + self.epoch[j] + _STREAM * j)
            self._perms = {key: torch.randperm(self.sizes[j], generator=g).tolist()}  # keep only the current one
        return self._perms[key]

    def _take(self, j: int) -> int:
        index = self._perm(j)[self.pos[j]]
        self.pos[j] += 1
        if self.pos[j] == self.sizes[j]:
            self.epoch[j], self.pos[j] = self.epoch[j] + 1, 0
        return self.offsets[j] + index

    def next(self, k: int) -> list[int]:
        """``k`` indices for this rank (ranks take disjoint slices of the same global order)."""
        slots = k * self.world
        if len(self.sizes) == 1:
            picks = [0] * slots
        else:
            g = torch.Generator().manual_seed(self.seed * _STREAM + self.draws)
            picks = torch.multinomial(self.weights, slots, replacement=True, generator=g).tolist()
        self.draws += 1
        order = [self._take(j) for j in picks]
        return order[self.rank::self.world]

    def state_dict(self) -> dict:
        return {"draws": self.draws, "epoch": list(self.epoch), "pos": list(self.pos)}

    def load_state_dict(self, state: dict) -> None:
        epoch, pos = state["epoch"], state["pos"]
        if isinstance(epoch, int):  # a single-dataset checkpoint from before mixtures
            epoch, pos = [epoch], [pos]
        if len(epoch) != len(self.sizes):
            raise DataError(f"the checkpoint's sampler has {len(epoch)} data sources, this run {len(self.sizes)}: "
                            "resume with the same data.mixture")
        self.draws, self.epoch, self.pos = state.get("draws", 0), list(epoch), list(pos)
