"""Supervised warm-up: shuffled labels teach the answer format, gold labels are plain SFT."""

import pytest
import torch

from sapo_vl.config import WarmupConfig
from sapo_vl.data import build_synthetic_shapes
from sapo_vl.models.load import load_policy
from sapo_vl.rollout import HFEngine, PromptFormat, SamplingParams, generate_completions
from sapo_vl.warmup import answer_pool, supervised_batch, warmup


@pytest.fixture(scope="module")
def records():
    return build_synthetic_shapes("train", n=48, num_colors=3)


def _greedy(model, processor, records):
    model.eval()
    out = [c[0] for c in generate_completions(HFEngine(model, processor), PromptFormat(processor), records,
                                              SamplingParams(4, temperature=0.0))]
    model.train()
    return out


def test_answer_pool_is_the_sorted_distinct_first_answers():
    assert answer_pool([{"answer": "red"}, {"answer": ["blue", "navy"]}, {"answer": "red"}, {"answer": 3},
                        {"answer": None}, {}]) == ["3", "blue", "red"]


def test_gold_labels_need_an_answer_on_every_record(tiny_dir, records):
    model, processor = load_policy(tiny_dir)
    unlabeled = [*records[:3], {**records[3], "id": "no-answer", "answer": None}]
    with pytest.raises(ValueError, match=r"1 record\(s\) have no answer, e.g. \['no-answer'\]"):
        warmup(model, PromptFormat(processor), unlabeled, WarmupConfig(steps=1, labels="gold"))
    with pytest.raises(ValueError, match="none of the given records has one"):
        warmup(model, PromptFormat(processor), [{**r, "answer": None} for r in records[:2]], WarmupConfig(steps=1))


def test_supervised_batch_targets_end_with_eos_and_mask_them(tiny_dir, records):
    _, processor = load_policy(tiny_dir)
    targets = ["red", "light blue green"]
    batch = supervised_batch(PromptFormat(processor), records[:2], targets)
    eos = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    for i, target in enumerate(targets):
        ids = batch.completion_ids[i][batch.response_mask[i].bool()].tolist()
        assert ids[-1] == eos and processor.tokenizer.decode(ids[:-1]) == target
    assert batch.response_mask[0].sum() < batch.response_mask[1].sum()  # padded after the shorter target
    assert batch.completions == targets and batch.pixel_values is not None


def test_shuffled_labels_teach_the_answer_format(tiny_dir, records):
    model, processor = load_policy(tiny_dir)
    pool = answer_pool(records)
    held_out = build_synthetic_shapes("test", n=9, num_colors=3)
    assert not any(text in pool for text in _greedy(model, processor, held_out))  # random init: no valid answer
    warmup(model, PromptFormat(processor), records, WarmupConfig(steps=8, batch_size=16, lr=3e-3, labels="shuffled"))
    assert all(text in pool for text in _greedy(model, processor, held_out))  # one valid answer, then EOS


def test_gold_labels_reduce_the_loss(tiny_dir, records):
    model, processor = load_policy(tiny_dir)
    losses = warmup(model, PromptFormat(processor), records, WarmupConfig(steps=6, batch_size=8, labels="gold"))
    assert len(losses) == 6 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-2:]) / 2 < losses[0] - 1.0


def test_warmup_is_deterministic_by_seed(tiny_dir, records):
    runs = []
    for _ in range(2):
        model, processor = load_policy(tiny_dir)
        runs.append(warmup(model, PromptFormat(processor), records, WarmupConfig(steps=2, batch_size=4), seed=3))
    assert runs[0] == runs[1]


def test_unknown_labels_value_is_an_error():  # the section refuses it, before any warm-up could start
    with pytest.raises(ValueError, match="labels\n  Input should be 'shuffled' or 'gold'"):
        WarmupConfig(steps=1, labels="random")
