"""Mixtures: sources built from the data section, tagged per source, sampled by weight, exactly resumable."""

from collections import Counter

import pytest
import torch

from sapo_vl.config import DataConfig, DataSource
from sapo_vl.data.mixture import SOURCE_COLUMN, MixtureSampler, load_sources
from sapo_vl.errors import DataError


def _old_single_dataset_order(n: int, seed: int, k: int, steps: int) -> list[int]:
    """The order the single-dataset sampler took before mixtures: seeded permutations, one per epoch."""
    out, epoch, pos = [], 0, 0
    for _ in range(steps * k):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        out.append(perm[pos])
        pos += 1
        if pos == n:
            epoch, pos = epoch + 1, 0
    return out


def test_one_source_takes_the_same_records_as_the_single_dataset_sampler_did():
    sampler = MixtureSampler([10], [1.0], seed=3)
    taken = [i for _ in range(7) for i in sampler.next(4)]  # 28 records: crosses two epoch boundaries
    assert taken == _old_single_dataset_order(10, 3, 4, 7)


def test_sources_are_drawn_in_proportion_to_their_weights():
    sampler = MixtureSampler([50, 30, 20], [3.0, 1.0, 1.0], seed=0)
    counts = Counter(0 if i < 50 else 1 if i < 80 else 2 for _ in range(400) for i in sampler.next(10))
    assert counts[0] / 4000 == pytest.approx(0.6, abs=0.03) and counts[1] / 4000 == pytest.approx(0.2, abs=0.03)


def test_each_source_is_walked_by_its_own_permutation_without_repeats_within_an_epoch():
    sampler = MixtureSampler([5, 500], [1.0, 1.0], seed=1)
    first = [i for i in (j for _ in range(10) for j in sampler.next(2)) if i < 5]
    assert len(first) >= 5 and sorted(first[:5]) == [0, 1, 2, 3, 4]


def test_ranks_take_disjoint_slices_of_the_one_global_order():
    solo = MixtureSampler([40, 40], [1.0, 2.0], seed=7)
    ranks = [MixtureSampler([40, 40], [1.0, 2.0], seed=7, rank=r, world=2) for r in range(2)]
    for _ in range(5):
        whole = solo.next(8)
        parts = [s.next(4) for s in ranks]
        assert parts[0] == whole[0::2] and parts[1] == whole[1::2]


def test_a_restored_sampler_continues_exactly():
    a = MixtureSampler([13, 7], [1.0, 1.0], seed=2)
    for _ in range(5):
        a.next(3)
    b = MixtureSampler([13, 7], [1.0, 1.0], seed=2)
    b.load_state_dict(a.state_dict())
    assert [a.next(3) for _ in range(10)] == [b.next(3) for _ in range(10)]


def test_a_pre_mixture_checkpoint_state_loads_and_a_different_mixture_is_refused():
    sampler = MixtureSampler([10], [1.0], seed=0)
    sampler.load_state_dict({"epoch": 2, "pos": 3})  # the single-dataset sampler's state
    assert sampler.state_dict() == {"draws": 0, "epoch": [2], "pos": [3]}
    with pytest.raises(DataError, match="2 data sources, this run 1"):
        sampler.load_state_dict({"draws": 1, "epoch": [0, 0], "pos": [0, 0]})


def test_load_sources_tags_records_with_their_source_and_reward():
    data = DataConfig(mixture=[DataSource(dataset="synthetic_shapes", weight=2, kwargs={"n": 6}, name="shapes"),
                               DataSource(dataset="easy_vqa", kwargs={"limit": 4}, reward="mcq",
                                          eval_kwargs={"limit": 2})])
    shapes, vqa = load_sources(data)
    assert (shapes.name, shapes.weight, len(shapes.train)) == ("shapes", 2.0, 6)
    assert {r[SOURCE_COLUMN] for r in shapes.train + shapes.eval} == {"shapes"}
    assert {r["reward"] for r in shapes.train} == {"vqa"}  # its own reward column is kept
    assert (len(vqa.train), len(vqa.eval)) == (4, 2) and {r["reward"] for r in vqa.train + vqa.eval} == {"mcq"}


def test_a_single_dataset_is_a_mixture_of_one_with_its_eval_dataset():
    (src,) = load_sources(DataConfig(dataset="synthetic_shapes", kwargs={"n": 5}, eval_kwargs={"n": 3}))
    assert (src.name, len(src.train), len(src.eval)) == ("synthetic_shapes", 5, 3)
    assert src.eval[0]["id"] == "synthetic_shapes-test-0"


def test_another_eval_dataset_gets_only_the_eval_kwargs(tmp_path):
    rows = tmp_path / "train.jsonl"
    rows.write_text('{"prompt": "What is 1+1?", "answer": "2"}\n{"prompt": "What is 2+2?", "answer": "4"}\n')
    (src,) = load_sources(DataConfig(dataset="jsonl", kwargs={"path": str(rows), "default_reward": "math"},
                                     eval_dataset="synthetic_shapes", eval_kwargs={"n": 3}))
    assert len(src.train) == 2 and [r["id"] for r in src.eval] == [f"synthetic_shapes-test-{i}" for i in range(3)]
