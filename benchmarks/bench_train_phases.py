"""Time per training phase and tokens/s on the tiny Qwen3-VL-MoE, per MoE experts implementation.

Runs a few real SAPO steps (rollout, old log-probs, rewards, update) through ``sapo_vl.train.run`` for each
``experts_implementation`` and prints the mean time of every phase (after one warm-up step) and its ratio to the
first variant (the baseline, HF's default), all in this one process.

    python benchmarks/bench_train_phases.py [--steps 6] [--group 16] [--prompts 4] [--impls default,eager,grouped_mm]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

PHASES = ["time/rollout", "time/logprob", "time/reward", "time/update", "time/step", "throughput/tokens_per_s"]


def measure(impl: str, args, root: Path) -> dict[str, float]:
    from sapo_vl.config import load_config
    from sapo_vl.train import run

    out = root / impl
    overrides = [f"output_dir={out}", f"train.total_steps={args.steps}", f"rollout.group_size={args.group}",
                 f"rollout.prompts_per_step={args.prompts}", "warmup.steps=0", "log.eval_limit=1",
                 "log.plot=false", "log.progress=false", "log.save_every=0", "log.backends=[jsonl]"]
    if impl != "default":
        overrides.append(f"model.experts_implementation={impl}")
    run(load_config(Path(__file__).resolve().parents[1] / "recipes/tiny/demo.yaml", overrides))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "time/step" in r][1:]  # drop the first (warm-up) step
    return {k: sum(r[k] for r in rows) / len(rows) for k in PHASES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--group", type=int, default=16)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--impls", default="default,eager,grouped_mm")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = {impl: measure(impl, args, Path(tmp)) for impl in args.impls.split(",")}
    base = next(iter(results.values()))
    print(f"\n{'phase':<26}" + "".join(f"{impl:>22}" for impl in results))
    for k in PHASES:
        cells = "".join(f"{r[k]:>12.3f} ({r[k] / base[k]:.2f}x)" for r in results.values())
        print(f"{k:<26}{cells}")
    print("(seconds per step, tokens/s; ratio against the first column)")


if __name__ == "__main__":
    main()
