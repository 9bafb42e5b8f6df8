"""The MoE stability ablation: every policy loss (and routing replay) x several seeds on one base recipe, then one
comparison figure and a markdown table. Resumable: a finished run is skipped, an interrupted one continues from its
last checkpoint. Runs go ``--jobs`` at a time, one CPU thread each.

    python benchmarks/stability_grid.py                                  # the full grid, 3 seeds
    python benchmarks/stability_grid.py --configs sapo grpo --seeds 0 --steps 100 --out runs/pilot
    python benchmarks/stability_grid.py --report-only                    # redraw from finished runs

Writes OUT/stability.png (held-out accuracy and token entropy against step: mean over seeds, min-max band) and
OUT/stability.md (final and best held-out accuracy, steps to the threshold, collapses: runs whose held-out accuracy
falls more than 0.3 below their own best after reaching it, and blow-ups: runs whose training-batch token entropy
passes 4 nats, i.e. the policy sampling near-uniformly over the vocabulary).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "recipes" / "ablations" / "base.yaml"
GRID = {  # name -> overrides of the base recipe (papers' settings via algo.preset)
    "sapo": ["algo.preset=sapo"],
    "sapo_reversed": ["algo.preset=sapo", "algo.loss_hparams={tau_pos: 1.05, tau_neg: 1.0}"],
    "sapo_tau0.5": ["algo.preset=sapo", "algo.loss_hparams={tau_pos: 0.5, tau_neg: 0.5}"],
    "grpo": ["algo.preset=grpo"],
    "grpo_replay": ["algo.preset=grpo", "algo.routing_replay=rollout"],
    "gspo": ["algo.preset=gspo"],
    "gspo_replay": ["algo.preset=gspo", "algo.routing_replay=rollout"],
    "cispo": ["algo.preset=cispo"],
}
COLLAPSE_DROP = 0.3
BLOW_UP_NATS = 4.0


def read_rows(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a half-written last line of an interrupted run
            pass
    return rows


def finished(run: Path, steps: int) -> bool:
    return any(r.get("step") == steps and "eval/accuracy" in r for r in read_rows(run))


def train_one(name: str, seed: int, args) -> tuple[str, int, float, int]:
    run = args.out / name / f"seed{seed}"
    if finished(run, args.steps):
        return name, seed, 0.0, 0
    cmd = [sys.executable, "-m", "sapo_vl.cli", "train", str(args.base), f"output_dir={run}", f"seed={seed}",
           f"train.total_steps={args.steps}", *GRID[name], *args.override]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    run.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(run / "train.log", "a") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    return name, seed, time.monotonic() - start, rc


def series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = sorted((r["step"], r[key]) for r in rows if r.get(key) is not None and "step" in r)
    return [s for s, _ in pts], [v for _, v in pts]


def run_summary(rows: list[dict], threshold: float) -> dict:
    steps, acc = series(rows, "eval/accuracy")
    if not acc:
        return {}
    best, collapsed, peak = max(acc), False, acc[0]
    for value in acc:
        peak = max(peak, value)
        collapsed |= value < peak - COLLAPSE_DROP
    reach = next((s for s, v in zip(steps, acc) if v >= threshold), None)
    blow_up = any(v > BLOW_UP_NATS for v in series(rows, "entropy")[1])
    return {"final": acc[-1], "best": best, "reach": reach, "collapsed": collapsed, "blow_up": blow_up,
            "last_step": steps[-1]}


def report(args) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    lines = [f"| config | final acc (mean ± sd) | best acc | steps to {args.threshold:.2f} | collapses | "
             f"entropy blow-ups |", "|---|---:|---:|---:|---:|---:|"]
    for i, name in enumerate(args.configs):
        runs = [read_rows(args.out / name / f"seed{s}") for s in args.seeds]
        sums = [run_summary(r, args.threshold) for r in runs if r]
        sums = [s for s in sums if s]
        for ax, key in zip(axes, ("eval/accuracy", "entropy")):
            curves = [series(r, key) for r in runs if r]
            if not curves or not curves[0][0]:
                continue
            n = min(len(c[0]) for c in curves)
            x, ys = curves[0][0][:n], np.array([c[1][:n] for c in curves])
            color = f"C{i}"
            ax.plot(x, ys.mean(0), color=color, label=name, ls="--" if "replay" in name else "-")
            ax.fill_between(x, ys.min(0), ys.max(0), color=color, alpha=0.12)
        if not sums:
            continue
        final = np.array([s["final"] for s in sums])
        reach = [s["reach"] for s in sums if s["reach"] is not None]
        reached = f"{np.mean(reach):.0f} ({len(reach)}/{len(sums)} runs)" if reach else "not reached"
        lines.append(f"| {name} | {final.mean():.3f} ± {final.std():.3f} | {max(s['best'] for s in sums):.3f} | "
                     f"{reached} | {sum(s['collapsed'] for s in sums)}/{len(sums)} | "
                     f"{sum(s['blow_up'] for s in sums)}/{len(sums)} |")
    axes[0].set(title="Held-out accuracy (greedy)", xlabel="step", ylabel="accuracy")
    axes[1].set(title="Token entropy (training batch, smoothed by eval cadence)", xlabel="step", ylabel="nats")
    axes[0].legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(args.out / "stability.png", dpi=120)
    table = "\n".join(lines) + "\n"
    (args.out / "stability.md").write_text(table)
    return table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", type=Path, default=BASE)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "ablation")
    p.add_argument("--configs", nargs="+", default=list(GRID), choices=list(GRID))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (one CPU thread each)")
    p.add_argument("--threshold", type=float, default=0.6, help="held-out accuracy for 'steps to threshold'")
    p.add_argument("--override", nargs="*", default=[], help="extra dotted.key=value for every run")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)
    if not args.report_only:
        jobs = [(name, seed) for seed in args.seeds for name in args.configs]
        with ThreadPoolExecutor(args.jobs) as pool:
            for name, seed, seconds, rc in pool.map(lambda job: train_one(*job, args), jobs):
                status = "skipped (done)" if seconds == 0 else f"{seconds:.0f} s" + (f", exit {rc}" if rc else "")
                print(f"[grid] {name} seed {seed}: {status}", flush=True)
    print(report(args), end="")
    print(f"[grid] figure: {args.out / 'stability.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
