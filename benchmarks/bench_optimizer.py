"""What the fused AdamW kernel buys (``sapo_vl.update.fused_adamw``): one optimizer step over the tiny Qwen3-VL-MoE's
trainable parameters with torch's fused kernel against its per-parameter loop, alternating in one process.

    python benchmarks/bench_optimizer.py [--rounds 7] [--steps 30] [--layers 4]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    from sapo_vl.models.load import load_policy
    from sapo_vl.models.tiny import TinyConfig, make_tiny_model
    from sapo_vl.update import fused_adamw

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=30, help="optimizer steps timed per round")
    p.add_argument("--layers", type=int, default=4)
    args = p.parse_args(argv)
    path = Path(tempfile.mkdtemp()) / "tiny"
    make_tiny_model(path, TinyConfig(num_hidden_layers=args.layers))
    model, _ = load_policy(path)
    params = [q for q in model.parameters() if q.requires_grad]
    for q in params:
        q.grad = torch.randn_like(q)
    optimizers = {"per-parameter loop": torch.optim.AdamW(params, lr=1e-6),
                  "fused": torch.optim.AdamW(params, lr=1e-6, **fused_adamw(params))}
    times: dict[str, list[float]] = {name: [] for name in optimizers}
    for r in range(args.rounds + 1):  # round 0 warms up
        for name, opt in optimizers.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                opt.step()
            if r:
                times[name].append((time.perf_counter() - start) / args.steps)
    loop, fused = (statistics.median(times[k]) for k in optimizers)
    print(f"AdamW over {len(params)} tensors ({sum(q.numel() for q in params):,} parameters), "
          f"{torch.get_num_threads()} threads, {args.rounds} rounds (median)")
    print(f"  per-parameter loop {loop * 1e3:.2f} ms per step, fused {fused * 1e3:.2f} ms: "
          f"fused is {loop / fused:.2f}x faster")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(2)  # here, not in main(): the test suite calls main() in its own process
    raise SystemExit(main())
