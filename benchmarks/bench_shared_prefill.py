"""One prefill per prompt against Hugging Face ``generate(num_return_sequences=G)``, which prefills each prompt G times.

Both paths draw the same tokens for the same seed (``tests/rollout/test_generate.py``), so this compares time only:
the median seconds of ``HFEngine.generate`` for 4 prompts x G completions on the tiny 4-layer Qwen3-VL-MoE, with
images of growing size (longer prompts: more vision tokens to prefill), the two paths alternating round after round.

    python benchmarks/bench_shared_prefill.py [--rounds 7] [--group 8] [--tokens 16]
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
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--tokens", type=int, default=16)
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 224, 448], help="image side in pixels")
    args = p.parse_args(argv)
    path = Path(tempfile.mkdtemp()) / "tiny-4"
    make_tiny_model(path, TinyConfig(num_hidden_layers=4, max_pixels=448 * 448))
    model, processor = load_policy(path)
    model.eval()
    engines = {"generate": HFEngine(model, processor, shared_prefill=False), "shared": HFEngine(model, processor)}
    params = SamplingParams(max_new_tokens=args.tokens, temperature=1.0)
    print(f"4 prompts x G {args.group}, {args.tokens} new tokens, tiny 4-layer MoE, "
          f"{torch.get_num_threads()} threads, {args.rounds} rounds")
    for size in args.sizes:
        prompts = collate_prompts(PromptFormat(processor), build_synthetic_shapes("train", n=4, image_size=size))
        times: dict[str, list[float]] = {name: [] for name in engines}
        for r in range(args.rounds + 1):  # round 0 warms up
            for name, engine in engines.items():
                torch.manual_seed(r)
                start = time.perf_counter()
                engine.generate(prompts, params, args.group, VisionCache())
                if r:
                    times[name].append(time.perf_counter() - start)
        med = {name: statistics.median(t) for name, t in times.items()}
        ratios = sorted(a / b for a, b in zip(times["generate"], times["shared"]))
        print(f"{size:4d} px  prompt {prompts.input_ids.shape[1]:4d} tokens  generate {med['generate']:.3f} s  "
              f"one prefill per prompt {med['shared']:.3f} s  speed-up {med['generate'] / med['shared']:.2f}x  "
              f"(per round {ratios[0]:.2f}-{ratios[-1]:.2f}x)")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(2)  # here, not in main(): the test suite calls main() in its own process
    raise SystemExit(main())
