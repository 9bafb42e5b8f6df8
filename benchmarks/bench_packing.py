"""What padding-free packing buys: the training forward + backward (``PolicyUpdate.accumulate``) of a skewed
workload, completions of 8 to 256 tokens after image prompts, padded (``train.packing=off``) against packed
(``train.packing=on``), on the tiny MoE, interleaved in one process, median of the repeats; and the rollout's
no-grad log-prob forward (``score_rollout``) likewise. The target: training packed at least 1.5x faster.

    python benchmarks/bench_packing.py [--repeats 7] [--sequences 32] [--layers 2] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

import sapo_vl  # noqa: F401  (torchvision compat before transformers)
from sapo_vl.config import AlgoConfig, RolloutConfig, TrainConfig
from sapo_vl.data import build_synthetic_shapes
from sapo_vl.models.load import load_policy
from sapo_vl.models.tiny import TinyConfig, make_tiny_model
from sapo_vl.rollout import PromptFormat, collate_prompts, score_rollout
from sapo_vl.rollout.types import Rollout


def skewed_rollout(processor, n: int, shortest: int, longest: int, seed: int = 0) -> Rollout:
    """``n`` image prompts, each with a completion of a uniformly random length in [shortest, longest] (random
    ordinary tokens), old log-probs and advantages filled in."""
    g = torch.Generator().manual_seed(seed)
    prompts = collate_prompts(PromptFormat(processor), build_synthetic_shapes("train", n=n))
    tok = processor.tokenizer
    special = set(tok.all_special_ids) | set(tok.convert_tokens_to_ids(list(tok.get_added_vocab())))
    ordinary = torch.tensor([i for i in range(len(tok)) if i not in special])
    lengths = torch.randint(shortest, longest + 1, (n,), generator=g)  # (n,)
    mask = (torch.arange(longest)[None] < lengths[:, None]).long()  # (n, C)
    ids = ordinary[torch.randint(len(ordinary), (n, longest), generator=g)] * mask  # (n, C)
    return Rollout(prompt_ids=prompts.input_ids, prompt_mask=prompts.attention_mask,
                   prompt_mm_types=prompts.mm_token_type_ids, completion_ids=ids, response_mask=mask,
                   truncated=torch.zeros(n, dtype=torch.bool), group_ids=torch.arange(n),
                   pixel_values=prompts.pixel_values, image_grid_thw=prompts.image_grid_thw,
                   images_per_sample=prompts.images_per_sample, records=prompts.records, completions=[""] * n,
                   image_keys=prompts.image_keys, old_logprobs=torch.randn(n, longest) * 0.1 - 7.0,
                   advantages=torch.randn(n, generator=g))


def main(argv: list[str] | None = None) -> None:
    from sapo_vl.update import PolicyUpdate

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--sequences", type=int, default=32)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--shortest", type=int, default=8)
    p.add_argument("--longest", type=int, default=256)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model, processor = load_policy(make_tiny_model(tempfile.mkdtemp(), TinyConfig(num_hidden_layers=args.layers)))
    model.train()
    ro = skewed_rollout(processor, args.sequences, args.shortest, args.longest)
    updates = {mode: PolicyUpdate(model, AlgoConfig(), TrainConfig(packing=mode), RolloutConfig(temperature=1.0))
               for mode in ("off", "on")}

    def train(mode: str) -> None:
        model.zero_grad(set_to_none=True)
        updates[mode].accumulate(ro)

    def score(packed: bool) -> None:
        score_rollout(model, ro, temperature=1.0, micro_batch_size=len(ro), packed=packed)

    cases = {"forward + backward": (lambda: train("off"), lambda: train("on")),  # name -> (padded, packed)
             "log-prob forward (no grad)": (lambda: score(False), lambda: score(True))}
    wall = {(name, i): [] for name in cases for i in (0, 1)}
    cpu = {(name, i): [] for name in cases for i in (0, 1)}  # this process's CPU time: less hit by other load
    for fns in cases.values():  # warm-up
        for fn in fns:
            fn()
    for _ in range(args.repeats):
        for name, fns in cases.items():  # interleaved: machine load hits both alike
            for i, fn in enumerate(fns):
                start, start_cpu = time.perf_counter(), time.process_time()
                fn()
                wall[name, i].append(time.perf_counter() - start)
                cpu[name, i].append(time.process_time() - start_cpu)
    real = int(ro.prompt_mask.sum() + ro.response_mask.sum())
    padded = len(ro) * (int(ro.prompt_mask.any(0).sum()) + args.longest)
    print(f"tiny MoE, {args.layers} layers, {len(ro)} sequences, completions {args.shortest}..{args.longest} tokens: "
          f"{real} real tokens, {padded} padded; median of {args.repeats} (torch threads {torch.get_num_threads()})")
    ratios = {}
    for name in cases:
        (slow, fast), (slow_cpu, fast_cpu) = ([statistics.median(t[name, i]) for i in (0, 1)] for t in (wall, cpu))
        ratios[name] = slow / fast
        print(f"  {name:<27} padded {slow * 1000:7.1f} ms  packed {fast * 1000:7.1f} ms  speed-up {slow / fast:.2f}x "
              f"(CPU time {slow_cpu / fast_cpu:.2f}x)")
    ratio = ratios["forward + backward"]
    print(f"training forward + backward, packed vs padded: {ratio:.2f}x  "
          f"({'meets' if ratio >= 1.5 else 'BELOW'} the 1.5x target)")

if __name__ == "__main__":
    main()
