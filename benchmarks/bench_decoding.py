"""What fused decoding buys: ``HFEngine`` generation with each new token through ``FusedDecoder`` against the same
engine through the text model's layer calls (``fused_decoding=False``) and against Hugging Face ``generate``.

All three prefill the same prompts and draw from the same distribution; they differ in how each new token runs through
the decoder. Tiny Qwen3-VL(-MoE) (4 layers by default), 4 prompts x G completions of ``--tokens`` tokens each (the
policy is random, so few stop early), 64 px images; the variants alternate round after round in one process and the
medians are compared.

    python benchmarks/bench_decoding.py [--rounds 7] [--group 8] [--tokens 64] [--layers 4] [--dense]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    from sapo_vl.data import build_synthetic_shapes
    from sapo_vl.models.load import load_policy
    from sapo_vl.models.tiny import TinyConfig, make_tiny_model
    from sapo_vl.models.vision import VisionCache
    from sapo_vl.rollout import HFEngine, PromptFormat, SamplingParams, collate_prompts

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--dense", action="store_true", help="the dense Qwen3-VL instead of the MoE")
    args = p.parse_args(argv)
    path = Path(tempfile.mkdtemp()) / "tiny"
    make_tiny_model(path, TinyConfig(num_hidden_layers=args.layers, moe=not args.dense))
    model, processor = load_policy(path)
    model.eval()
    engines = {"generate": HFEngine(model, processor, shared_prefill=False),
               "layer calls": HFEngine(model, processor, fused_decoding=False),
               "fused": HFEngine(model, processor)}
    prompts = collate_prompts(PromptFormat(processor), build_synthetic_shapes("train", n=args.prompts, image_size=64))
    params = SamplingParams(max_new_tokens=args.tokens, temperature=1.0)
    times: dict[str, list[float]] = {name: [] for name in engines}
    tokens: dict[str, int] = {}
    for r in range(args.rounds + 1):  # round 0 warms up
        for name, engine in engines.items():
            torch.manual_seed(r)
            start = time.perf_counter()
            ids = engine.generate(prompts, params, args.group, VisionCache())
            if r:
                times[name].append(time.perf_counter() - start)
                tokens[name] = ids.shape[1]
    print(f"{args.prompts} prompts x G {args.group}, up to {args.tokens} new tokens, tiny {args.layers}-layer "
          f"{'dense' if args.dense else 'MoE'}, {torch.get_num_threads()} threads, {args.rounds} rounds (median)")
    base = statistics.median(times["fused"])
    for name, t in times.items():
        med = statistics.median(t)
        per_round = sorted(a / b for a, b in zip(t, times["fused"]))
        print(f"  {name:12s} {med * 1e3:8.1f} ms per generation, {med / tokens[name] * 1e3:6.2f} ms per step; "
              f"fused is {med / base:.2f}x faster (per round {per_round[0]:.2f}-{per_round[-1]:.2f}x)")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(2)  # here, not in main(): the test suite calls main() in its own process
    raise SystemExit(main())
