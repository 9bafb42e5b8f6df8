"""What taking pi_old from the sampler buys: whole training steps with ``rollout.old_logprobs=sampler`` (the sampler's
own log-probs, no scoring forward) against ``score`` (a no-grad forward of the policy scores the rollout; with one
epoch, the update's first mini-batch reads them from its own forward and one forward scores the rest).

Two runs of the same config, built in this one process from the same seed, alternate step after step; the medians
of their step times and of ``time/logprob`` are compared. Defaults: the decode-bound workload of
``bench_vs_trl.py`` (4 prompts x G 8, 64 new tokens, 64 px, 4-layer tiny MoE, 2 mini-batches). With ``--epochs 2``
the score variant scores every row.

    python benchmarks/bench_old_logprobs.py [--rounds 7] [--mini-batches 2] [--epochs 1] [--tokens 64]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

PHASES = ("rollout", "logprob", "update")  # the step's time/* metrics printed


def main(argv: list[str] | None = None) -> int:
    from sapo_vl.config import load_config
    from sapo_vl.models.tiny import TinyConfig, make_tiny_model
    from sapo_vl.rundir import StopFlag
    from sapo_vl.train import setup, train_step

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--mini-batches", type=int, default=2)
    p.add_argument("--epochs", type=int, default=1)
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp())
    model = make_tiny_model(root / "tiny", TinyConfig(num_hidden_layers=args.layers))
    runs = {}
    for choice in ("score", "sampler"):
        cfg = load_config(None, [
            f"output_dir={root / choice}", f"model.path={model}", "data.dataset=synthetic_shapes",
            "data.kwargs={n: 64, image_size: 64}", f"rollout.prompts_per_step={args.prompts}",
            f"rollout.group_size={args.group}", f"rollout.max_new_tokens={args.tokens}", "reward.funcs={vqa: 1.0}",
            "reward.num_workers=1", "algo.preset=sapo", "train.lr=1e-6", f"train.num_mini_batches={args.mini_batches}",
            f"train.epochs={args.epochs}", "log.backends=[]", "log.progress=false", "log.plot=false",
            f"rollout.old_logprobs={choice}"])
        runs[choice] = setup(cfg, None, StopFlag())
    times: dict[str, list[float]] = {name: [] for name in runs}
    phases: dict[str, dict[str, list[float]]] = {name: {} for name in runs}
    for r in range(args.rounds + 1):  # round 0 warms up
        for name, run in runs.items():
            start = time.perf_counter()
            metrics = train_step(run)
            if r:
                times[name].append(time.perf_counter() - start)
                for phase in PHASES:
                    phases[name].setdefault(phase, []).append(metrics[f"time/{phase}"])
    print(f"{args.prompts} prompts x G {args.group}, {args.tokens} new tokens, tiny {args.layers}-layer MoE, "
          f"{args.mini_batches} mini-batches x {args.epochs} epochs, {torch.get_num_threads()} threads, "
          f"{args.rounds} rounds (median)")
    for name in runs:
        print(f"  pi_old by {name:8s} {statistics.median(times[name]):.3f} s per step: "
              + ", ".join(f"{k} {statistics.median(v):.3f} s" for k, v in phases[name].items()))
    per_round = sorted(a / b for a, b in zip(times["score"], times["sampler"]))
    print(f"  sampler's log-probs: {statistics.median(times['score']) / statistics.median(times['sampler']):.2f}x "
          f"faster steps (per round {per_round[0]:.2f}-{per_round[-1]:.2f}x)")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(2)  # here, not in main(): the test suite calls main() in its own process
    raise SystemExit(main())
