"""The MoE stability grid, round two (issue 22): policy losses x off-policy stresses x seeds on one task, one CSV row
per finished run (docs/stability_runs.csv, committed), and the table and figure regenerated from that CSV alone.
Resumable: a finished run is skipped (its row kept), an interrupted one continues from its last checkpoint. Runs go
``--jobs`` at a time, one CPU thread each.

    python benchmarks/stability_grid.py --stress lr1e-3 mismatch          # every arm x 5 seeds, shapes task
    python benchmarks/stability_grid.py --task colors --stress stale2 stale4
    python benchmarks/stability_grid.py --lr-sweep                        # SAPO vs GRPO over learning rates
    python benchmarks/stability_grid.py --report-only                     # docs/stability.md's table + figure

Stresses (each alone, over the task's recipe):
  lr1e-3    round one's setting, kept comparable: lr 1e-3, 4 mini-batches per rollout (three off-policy).
  mismatch  the train/inference mismatch: a bf16 copy of the weights samples, its log-probs and experts are pi_old
            (``rollout.sampler_dtype=bfloat16``, ``rollout.old_logprobs=sampler``); the update in float32.
  stale<s>  the update trains on the rollout made s steps earlier (``rollout.staleness``); ``stale0`` is the
            unstressed control of the two stresses above: the same learning rate and mini-batch, on-policy.
  The last three run at ``--stress-lr`` with one mini-batch, so their only off-policy noise is the stress itself.
  sweep<X>  (``--lr-sweep``) round one's 4 mini-batches at learning rate X, 60 steps, 3 seeds, SAPO and GRPO.
The arms ``*_tis`` (token-level truncated importance sampling against the sampler, ``algo.rollout_correction``, with
pi_old from a float32 scoring forward) run only under ``mismatch``: elsewhere the sampler's log-probs are pi_old's.

Collapse criterion, fixed before any round-two run (columns ``collapse_*``; ``collapsed`` is any of them):
  eval    some held-out evaluation (``eval/accuracy``; on colors ``eval/reward``, the partial credit, as whole-list
          accuracy stays near 0) falls below half of the best earlier one, that best being >= 0.1;
  reward  some 10-step moving mean of the training reward falls below half of the best earlier one (>= 0.1);
  blow_up the training batch's token entropy passes 4 nats (sampling near-uniformly over the vocabulary).

Time, on the 2-core CPU with nothing else running, 2 runs at a time (measured 2026-12-08, 250 steps, shapes):
median wall time per run 45-49 s for stale0/2/4, 54 s for mismatch (the bf16 copy samples), 72 s for lr1e-3 (4
mini-batches), i.e. half that of grid time per run. So, per task with the default 5 seeds:
  --stress lr1e-3 mismatch     7 + 9 arms x 5 seeds = 80 runs, about 45 min (shapes)
  --stress stale2 stale4       7 + 7 arms x 5 seeds = 70 runs, about 28 min
  --stress stale0              35 runs, about 13 min
  --lr-sweep                   2 arms x 4 lrs x 3 seeds x 60 steps, about 5 min
colors runs take about 1.3x as long (17-token answers). Each grid fits well within 2 hours; round one saw steps up to
3x slower while other work shared the cores.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASKS = {"shapes": ROOT / "recipes" / "ablations" / "base.yaml", "colors": ROOT / "recipes" / "tiny" / "colors.yaml"}
EVAL_KEY = {"shapes": "eval/accuracy", "colors": "eval/reward"}
SAPO = ["algo.preset=sapo"]  # tau_pos 1.0, tau_neg 1.05
TIS = ["rollout.old_logprobs=score", "algo.rollout_correction.mode=token_truncate"]
ARMS = {  # name -> overrides, after the stress's
    "sapo": SAPO,
    "sapo_reversed": [*SAPO, "algo.loss_hparams={tau_pos: 1.05, tau_neg: 1.0}"],
    "sapo_replay": [*SAPO, "algo.routing_replay=rollout"],  # the paper: SAPO needs no replay
    "grpo": ["algo.preset=grpo"],
    "grpo_replay": ["algo.preset=grpo", "algo.routing_replay=rollout"],
    "gspo": ["algo.preset=gspo"],
    "gspo_replay": ["algo.preset=gspo", "algo.routing_replay=rollout"],
    "cispo": ["algo.preset=cispo"],
    "sapo_tis": [*SAPO, *TIS],
    "grpo_tis": ["algo.preset=grpo", *TIS],
}
ONLY_UNDER = {"sapo_tis": "mismatch", "grpo_tis": "mismatch"}
STRESS_NAMES = ["lr1e-3", "stale0", "mismatch", "stale2", "stale4"]  # also the report order
SWEEP_LRS = [3e-5, 1e-4, 3e-4, 1e-3]
COMMON = ["log.eval_every=25", "log.save_every=25", "log.keep_last=1", "log.plot=false", "log.progress=false"]
COLUMNS = ["commit", "config_hash", "task", "stress", "arm", "seed", "steps", "seconds", "final_acc", "best_acc",
           "final_train_reward", "collapse_eval", "collapse_reward", "blow_up", "collapsed", "ratio_q05", "ratio_q50",
           "ratio_q95", "ratio_outside_frac", "ratio_start_q05", "ratio_start_q95", "clip_frac", "gate_mean_pos",
           "gate_mean_neg", "grad_norm", "grad_norm_max"]
MEANS = {"ratio_q05": "ratio/q05", "ratio_q50": "ratio/q50", "ratio_q95": "ratio/q95",
         "ratio_outside_frac": "ratio/outside_frac", "ratio_start_q05": "ratio_start/q05",
         "ratio_start_q95": "ratio_start/q95", "clip_frac": "clip_frac", "gate_mean_pos": "sapo/gate_mean_pos",
         "gate_mean_neg": "sapo/gate_mean_neg", "grad_norm": "grad_norm"}
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def stress_overrides(stress: str, stress_lr: float) -> list[str]:
    """The config overrides of a named stress (module docstring); an unknown name is an error."""
    at_lr = [f"train.lr={stress_lr}", "train.num_mini_batches=1"]
    if stress == "mismatch":
        return [*at_lr, "rollout.sampler_dtype=bfloat16", "rollout.old_logprobs=sampler"]
    if stress.startswith("stale") and stress[5:].isdigit():
        return [*at_lr, f"rollout.staleness={int(stress[5:])}"]
    if stress.startswith(("lr", "sweep")):
        try:
            return [f"train.lr={float(stress.removeprefix('lr').removeprefix('sweep'))}", "train.num_mini_batches=4"]
        except ValueError:
            pass
    raise SystemExit(f"unknown stress {stress!r}: expected mismatch, stale<N>, lr<X> or sweep<X> (e.g. lr1e-3)")


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


def finished(rows: list[dict], steps: int) -> bool:
    return any(r.get("step") == steps and any(k.startswith("eval/") for k in r) for r in rows)


def series(rows: list[dict], key: str) -> list[float]:
    return [v for _, v in sorted((r["step"], r[key]) for r in rows if r.get(key) is not None and "step" in r)]


def halved(values: list[float], floor: float = 0.1) -> bool:
    """Some value below half of the best earlier one, that best being >= ``floor``."""
    best = -float("inf")
    for v in values:
        if best >= floor and v < best / 2:
            return True
        best = max(best, v)
    return False


def summarize(rows: list[dict], eval_key: str) -> dict:
    """The CSV's per-run statistics from a run's metrics.jsonl rows (means over training steps)."""
    evals, reward = series(rows, eval_key), series(rows, "reward/mean")
    window = [sum(reward[i - 10:i]) / 10 for i in range(10, len(reward) + 1)]
    out = {"final_acc": evals[-1] if evals else "", "best_acc": max(evals) if evals else "",
           "final_train_reward": window[-1] if window else (sum(reward) / len(reward) if reward else ""),
           "collapse_eval": halved(evals), "collapse_reward": halved(window),
           "blow_up": any(v > 4.0 for v in series(rows, "entropy"))}
    out["collapsed"] = out["collapse_eval"] or out["collapse_reward"] or out["blow_up"]
    for col, key in MEANS.items():
        values = series(rows, key)
        out[col] = sum(values) / len(values) if values else ""
    out["grad_norm_max"] = max(series(rows, "grad_norm"), default="")
    return out


def config_hash(run: Path) -> str:
    """The run's resolved config without output_dir and seed (the same for every seed of a cell)."""
    path = run / "config.yaml"
    if not path.is_file():
        return ""
    lines = [x for x in path.read_text().splitlines() if not x.startswith(("output_dir:", "seed:"))]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]


def commit() -> str:
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no", "sapo_vl"], capture_output=True,
                           text=True).stdout.strip()
    return head + ("-dirty" if dirty else "")


def train_one(job: tuple, args) -> dict:
    task, stress, arm, seed = job
    run = args.out / task / stress / arm / f"seed{seed}"
    start = time.monotonic()
    if not finished(read_rows(run), args.steps):
        cmd = [sys.executable, "-m", "sapo_vl.cli", "train", str(TASKS[task]), f"output_dir={run}", f"seed={seed}",
               f"train.total_steps={args.steps}", *COMMON, *stress_overrides(stress, args.stress_lr), *ARMS[arm],
               *args.override]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        run.mkdir(parents=True, exist_ok=True)
        with open(run / "train.log", "a") as log:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
        if rc:
            print(f"[grid] {task} {stress} {arm} seed {seed}: exit {rc} (see {run / 'train.log'})", flush=True)
    rows = read_rows(run)
    if not finished(rows, args.steps):
        return {}
    return {"commit": args.commit, "config_hash": config_hash(run), "task": task, "stress": stress, "arm": arm,
            "seed": seed, "steps": args.steps, "seconds": round(time.monotonic() - start),
            **summarize(rows, EVAL_KEY[task])}


def key(row: dict) -> tuple:
    return row["task"], row["stress"], row["arm"], str(row["seed"]), str(row["steps"])


def load_csv(path: Path) -> list[dict]:
    return list(csv.DictReader(path.open())) if path.is_file() else []


def save_row(path: Path, row: dict) -> None:
    """Append ``row`` unless a row of the same run is there already (its commit is the one it ran on)."""
    if any(key(r) == key(row) for r in load_csv(path)):
        return
    new = not path.is_file()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow({c: (f"{v:.4g}" if isinstance(v, float) else v) for c, v in row.items()})


def cell_stats(values: list[float]) -> tuple[float, float, float]:
    """Mean, sample sd and the 95% t-interval's half-width (nan for one value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan"), float("nan")
    sd = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5
    return mean, sd, T975.get(n - 1, 1.96) * sd / n ** 0.5


def cells(rows: list[dict]) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = {}
    for r in rows:
        out.setdefault((r["task"], r["stress"], r["arm"]), []).append(r)
    return out


def _num(rows: list[dict], col: str, digits: int = 3) -> str:
    values = [float(r[col]) for r in rows if r.get(col) not in ("", None)]
    return f"{sum(values) / len(values):.{digits}g}" if values else "-"


PAIRS = [("sapo", "sapo_reversed"), ("sapo", "grpo"), ("sapo", "gspo"), ("sapo", "cispo"), ("sapo_replay", "sapo"),
         ("grpo_replay", "grpo"), ("gspo_replay", "gspo"), ("sapo_tis", "sapo"), ("grpo_tis", "grpo")]


def _order(cell: tuple) -> tuple:
    task, stress, arm = cell
    def rank(name: str, names) -> int:
        return list(names).index(name) if name in names else len(names)

    return rank(task, TASKS), task, rank(stress, STRESS_NAMES), stress, rank(arm, ARMS), arm


def table(rows: list[dict]) -> str:
    """Two tables over the cells (task, stress, arm): outcomes, then the mechanism statistics (means over runs of
    each run's mean over its training steps)."""
    out = ["| task | stress | arm | n | final acc (mean ± sd) | 95% CI | best acc | train reward | collapsed "
           "(eval/reward/blow-up) |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    mech = ["| task | stress | arm | ratio q05-q95 | outside [0.8,1.2] | start ratio q05-q95 | clip frac | gate +/- "
            "| grad norm (mean / max) |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for (task, stress, arm), rs in sorted(cells(rows).items(), key=lambda kv: _order(kv[0])):
        mean, sd, half = cell_stats([float(r["final_acc"]) for r in rs])
        flags = "/".join(str(sum(r[c] == "True" for r in rs)) for c in ("collapse_eval", "collapse_reward", "blow_up"))
        out.append(f"| {task} | {stress} | {arm} | {len(rs)} | {mean:.3f} ± {sd:.3f} | "
                   f"[{mean - half:.3f}, {mean + half:.3f}] | {_num(rs, 'best_acc')} | "
                   f"{_num(rs, 'final_train_reward')} | {sum(r['collapsed'] == 'True' for r in rs)} ({flags}) |")
        mech.append(f"| {task} | {stress} | {arm} | {_num(rs, 'ratio_q05')}-{_num(rs, 'ratio_q95')} | "
                    f"{_num(rs, 'ratio_outside_frac')} | {_num(rs, 'ratio_start_q05')}-{_num(rs, 'ratio_start_q95')} "
                    f"| {_num(rs, 'clip_frac')} | {_num(rs, 'gate_mean_pos', 5)}/{_num(rs, 'gate_mean_neg', 5)} | "
                    f"{_num(rs, 'grad_norm')} / {_num(rs, 'grad_norm_max')} |")
    return "\n".join(out) + "\n\nMechanism statistics:\n\n" + "\n".join(mech) + "\n"


def welch(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean difference a - b and its 95% interval's half-width (Welch's standard error, the t quantile of the
    smaller sample's n - 1 degrees of freedom: conservative)."""
    (ma, sa, _), (mb, sb, _) = cell_stats(a), cell_stats(b)
    return ma - mb, T975.get(min(len(a), len(b)) - 1, 1.96) * (sa ** 2 / len(a) + sb ** 2 / len(b)) ** 0.5


def difference(ra: list[dict], rb: list[dict], col: str = "final_acc") -> tuple[float, float, str]:
    """Mean difference of ``col`` between two cells with its 95% half-width: paired by seed where both cells ran
    the same seeds (a seed fixes the data order, the warm-up and the sampling noise of both arms), else ``welch``."""
    a, b = {r["seed"]: float(r[col]) for r in ra}, {r["seed"]: float(r[col]) for r in rb}
    if a.keys() == b.keys():
        mean, _, half = cell_stats([a[k] - b[k] for k in a])
        return mean, half, "paired"
    return (*welch(list(a.values()), list(b.values())), "welch")


def comparisons(rows: list[dict]) -> str:
    """The pairs a claim rests on (``PAIRS``), per task and stress: final-accuracy difference with its 95% interval
    (``difference``), and the collapsed runs of each side."""
    by = cells(rows)
    lines = ["| task | stress | comparison | final acc difference (95% CI) | differs | collapsed |",
             "|---|---|---|---:|---|---:|"]
    for task, stress in sorted({(t, s) for t, s, _ in by}, key=lambda ts: _order((*ts, ""))):
        for a, b in PAIRS:
            ra, rb = by.get((task, stress, a), []), by.get((task, stress, b), [])
            if len(ra) < 2 or len(rb) < 2:
                continue
            diff, half, test = difference(ra, rb)
            differs = "yes" if abs(diff) > half else "no"
            lines.append(f"| {task} | {stress} | {a} - {b} | {diff:+.3f} ± {half:.3f} ({test}) | {differs} | "
                         f"{sum(r['collapsed'] == 'True' for r in ra)}/{len(ra)} vs "
                         f"{sum(r['collapsed'] == 'True' for r in rb)}/{len(rb)} |")
    return "\n".join(lines) + "\n"


def stress_effects(rows: list[dict], control: str = "stale0") -> str:
    """Each arm under each stress against the same arm in the ``control`` cell (same lr and mini-batches,
    on-policy): final-accuracy difference with its 95% interval (``difference``)."""
    by = cells(rows)
    lines = [f"| task | arm | stress | final acc, stress - {control} (95% CI) | differs |", "|---|---|---|---:|---|"]
    for task, stress, arm in sorted(by, key=_order):
        base = by.get((task, control, arm), [])
        if stress in (control, "lr1e-3") or min(len(base), len(by[task, stress, arm])) < 2:  # lr1e-3: other lr
            continue
        diff, half, test = difference(by[task, stress, arm], base)
        lines.append(f"| {task} | {arm} | {stress} | {diff:+.3f} ± {half:.3f} ({test}) | "
                     f"{'yes' if abs(diff) > half else 'no'} |")
    return "\n".join(lines) + "\n"


def figure(rows: list[dict], path: Path) -> None:
    """Per (task, stress) panel, per arm: final held-out accuracy (top) and the final 10-step training reward
    (bottom), each seed a dot, the mean and its 95% CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["task"], r["stress"]) for r in rows}, key=lambda ts: _order((*ts, "")))
    fig, axes = plt.subplots(2, len(panels), figsize=(3.6 * len(panels), 6.4), squeeze=False, sharey="row")
    for j, (task, stress) in enumerate(panels):
        by_arm = sorted(((arm, rs) for (t, s, arm), rs in cells(rows).items() if (t, s) == (task, stress)),
                        key=lambda kv: _order((task, stress, kv[0])))
        for ax, col, label in ((axes[0][j], "final_acc", "final held-out accuracy\n(colors: partial credit)"),
                               (axes[1][j], "final_train_reward", "final training reward")):
            for i, (arm, rs) in enumerate(by_arm):
                values = [float(r[col]) for r in rs if r.get(col) not in ("", None)]
                if not values:
                    continue
                mean, _, half = cell_stats(values)
                ax.scatter([i] * len(values), values, s=10, color="0.6")
                colour = f"C{list(ARMS).index(arm) % 10}" if arm in ARMS else "k"  # one colour per arm throughout
                ax.errorbar([i], [mean], yerr=[0 if half != half else half], fmt="o", color=colour, capsize=3)
            ax.set_xticks(range(len(by_arm)), [arm for arm, _ in by_arm], rotation=60, fontsize=7)
            ax.set_xlim(-0.6, max(len(by_arm), 3) - 0.4)
            if j == 0:
                ax.set_ylabel(label)
        axes[0][j].set_title(f"{task}, {stress}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def sweep_report(rows: list[dict]) -> str:
    """SAPO vs GRPO final accuracy per swept learning rate; the first lr whose difference's 95% interval
    (``difference``) excludes 0."""
    lines, first = ["| lr | sapo final | grpo final | difference (95% CI) |", "|---:|---:|---:|---:|"], None
    lrs = sorted({r["stress"] for r in rows if r["stress"].startswith("sweep")}, key=lambda s: float(s[5:]))
    for stress in lrs:
        got = {arm: [r for r in rows if r["stress"] == stress and r["arm"] == arm] for arm in ("sapo", "grpo")}
        if not all(len(v) >= 2 for v in got.values()):
            continue
        (ms, ss, _), (mg, sg, _) = (cell_stats([float(r["final_acc"]) for r in got[a]]) for a in ("sapo", "grpo"))
        diff, half, test = difference(got["sapo"], got["grpo"])
        if first is None and abs(diff) > half:
            first = stress
        lines.append(f"| {stress[5:]} | {ms:.3f} ± {ss:.3f} | {mg:.3f} ± {sg:.3f} | "
                     f"{diff:+.3f} ± {half:.3f} ({test}) |")
    return "\n".join(lines) + f"\n\nFirst learning rate where SAPO and GRPO differ: {first or 'none swept'}\n"


def write_report(args) -> str:
    rows = [r for r in load_csv(args.csv) if r["final_acc"] != ""]
    grid = [r for r in rows if not r["stress"].startswith("sweep")]
    text = (table(grid) + "\nComparisons (final held-out accuracy):\n\n" + comparisons(grid)
            + "\nEach stress against the on-policy control:\n\n" + stress_effects(grid))
    if len(grid) < len(rows):
        text += "\n" + sweep_report(rows)
    if grid:
        figure(grid, args.figure)
    if args.doc.is_file():
        doc = args.doc.read_text()
        start, end = "<!-- grid table: benchmarks/stability_grid.py --report-only -->", "<!-- /grid table -->"
        if start in doc and end in doc:
            head, rest = doc.split(start, 1)
            args.doc.write_text(head + start + "\n" + text + end + rest.split(end, 1)[1])
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=list(TASKS), default="shapes")
    p.add_argument("--stress", nargs="+", default=["lr1e-3", "mismatch"], help=f"of {STRESS_NAMES}, lr<X>")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--stress-lr", type=float, default=3e-4, help="learning rate of mismatch / stale<N>")
    p.add_argument("--lr-sweep", action="store_true", help=f"sapo and grpo at lr {SWEEP_LRS}, 3 seeds, 60 steps")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (one CPU thread each)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "stability2")
    p.add_argument("--csv", type=Path, default=ROOT / "docs" / "stability_runs.csv")
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "stability.md")
    p.add_argument("--figure", type=Path, default=ROOT / "docs" / "stability_grid.png")
    p.add_argument("--override", nargs="*", default=[], help="extra dotted.key=value for every run")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)
    if args.lr_sweep:
        args.stress, args.arms = [f"sweep{lr:.0e}".replace("e-0", "e-") for lr in SWEEP_LRS], ["sapo", "grpo"]
        if args.seeds == p.get_default("seeds"):
            args.seeds = [0, 1, 2]
        if args.steps == p.get_default("steps"):
            args.steps = 60
    for stress in args.stress:
        stress_overrides(stress, args.stress_lr)  # an unknown stress fails before any run
    if not args.report_only:
        args.commit = commit()
        jobs = [(args.task, stress, arm, seed) for stress in args.stress for seed in args.seeds for arm in args.arms
                if ONLY_UNDER.get(arm, stress) == stress]
        with ThreadPoolExecutor(args.jobs) as pool:
            for job, row in zip(jobs, pool.map(lambda job: train_one(job, args), jobs)):
                if row:
                    save_row(args.csv, row)
                print(f"[grid] {' '.join(map(str, job))}: " + (f"{row['seconds']} s" if row else "not finished"),
                      flush=True)
    print(write_report(args), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
