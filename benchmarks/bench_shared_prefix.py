"""What sharing each prompt across its G completions buys, in generation and in training.

Generation: ``HFEngine`` with one prefill per prompt (its KV cache repeated G times) against Hugging Face
``generate(num_return_sequences=G)``, which prefills every prompt G times; both draw the same tokens for the same seed.
Training: ``PolicyUpdate.accumulate`` (forward + backward) and ``score_rollout`` (the no-grad log-prob forward) with
shared-prefix forwards against padded and packed ones, on a sampled rollout. Tiny 4-layer Qwen3-VL-MoE, 4 prompts x
G completions, images of growing size (longer prompts: more vision tokens); the variants alternate round after round
in one process and the medians are compared.

    python benchmarks/bench_shared_prefix.py [--rounds 7] [--group 8] [--tokens 16] [--sizes 64 224 448]
                                             [--gradient-checkpointing]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import torch


def _timed(fns: dict, rounds: int) -> dict[str, list[float]]:
    """Seconds of each callable per round (after one warm-up round), the callables alternating."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(rounds + 1):
        for name, fn in fns.items():
            torch.manual_seed(r)
            start = time.perf_counter()
            fn()
            if r:
                times[name].append(time.perf_counter() - start)
    return times


def _ratio(times: dict, base: str, new: str) -> str:
    med = statistics.median(times[base]) / statistics.median(times[new])
    per_round = sorted(a / b for a, b in zip(times[base], times[new]))
    return f"{med:.2f}x (per round {per_round[0]:.2f}-{per_round[-1]:.2f}x)"


def measure(model, fmt, engines: dict, updates: dict, records: list[dict], args) -> dict[str, dict]:
    """Per-round seconds of generation, forward + backward and the log-prob forward on ``records``."""
    from sapo_vl.models.vision import VisionCache
    from sapo_vl.rollout import SamplingParams, collate_prompts, make_rollout, score_rollout

    params = SamplingParams(max_new_tokens=args.tokens, temperature=1.0)
    prompts = collate_prompts(fmt, records)
    model.eval()
    gen = _timed({name: partial(e.generate, prompts, params, args.group, VisionCache())
                  for name, e in engines.items()}, args.rounds)
    torch.manual_seed(0)
    ro = make_rollout(engines["shared"], fmt, records, args.group, params)
    ro.old_logprobs, ro.advantages = torch.zeros(ro.completion_ids.shape), torch.randn(len(ro))
    model.train()

    def train(update) -> None:
        model.zero_grad(set_to_none=True)
        update.accumulate(ro)

    def score(update) -> None:
        score_rollout(model, ro, temperature=1.0, micro_batch_size=len(ro), packed=update.packed, share=update.share)

    return {"generation": gen, "forward + backward": _timed({k: partial(train, u) for k, u in updates.items()},
                                                            args.rounds),
            "log-prob forward": _timed({k: partial(score, u) for k, u in updates.items()}, args.rounds),
            "prompt tokens": prompts.input_ids.shape[1]}


def main(argv: list[str] | None = None) -> int:
    from sapo_vl.config import AlgoConfig, ModelConfig, RolloutConfig, TrainConfig
    from sapo_vl.data import build_synthetic_shapes
    from sapo_vl.models.load import load_policy
    from sapo_vl.models.tiny import TinyConfig, make_tiny_model
    from sapo_vl.rollout import HFEngine, PromptFormat
    from sapo_vl.update import PolicyUpdate

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--tokens", type=int, default=16)
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 224, 448], help="image side in pixels")
    p.add_argument("--gradient-checkpointing", action="store_true", help="as the real-size recipes train")
    args = p.parse_args(argv)
    path = Path(tempfile.mkdtemp()) / "tiny-4"
    make_tiny_model(path, TinyConfig(num_hidden_layers=4, max_pixels=448 * 448))
    model, processor = load_policy(path, ModelConfig(gradient_checkpointing=args.gradient_checkpointing))
    engines = {"generate": HFEngine(model, processor, shared_prefill=False), "shared": HFEngine(model, processor)}
    variants = (("padded", "off", "off"), ("packed", "on", "off"), ("shared", "on", "auto"))
    updates = {name: PolicyUpdate(model, AlgoConfig(), TrainConfig(packing=packing, prefix_sharing=share),
                                  RolloutConfig(temperature=1.0)) for name, packing, share in variants}
    print(f"4 prompts x G {args.group}, {args.tokens} new tokens, tiny 4-layer MoE"
          f"{', gradient checkpointing' if args.gradient_checkpointing else ''}, {torch.get_num_threads()} threads, "
          f"{args.rounds} rounds; speed-ups are median time ratios")
    for size in args.sizes:
        t = measure(model, PromptFormat(processor), engines, updates,
                    build_synthetic_shapes("train", n=4, image_size=size), args)
        print(f"{size:4d} px, prompt {t['prompt tokens']} tokens")
        gen = _ratio(t["generation"], "generate", "shared")
        print(f"  generation          one prefill per prompt vs generate: {gen}")
        for label in ("forward + backward", "log-prob forward"):
            print(f"  {label:19s} shared vs padded {_ratio(t[label], 'padded', 'shared')}, "
                  f"vs packed {_ratio(t[label], 'packed', 'shared')}")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(2)  # here, not in main(): the test suite calls main() in its own process
    raise SystemExit(main())
