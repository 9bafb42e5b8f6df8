"""PNG curves from a run's ``metrics.jsonl`` (written by :class:`sapo_vl.tracking.Tracker`).

    sapo-vl plot RUN_DIR [--out DIR]           summary figure -> RUN_DIR/plots/summary.png
    sapo-vl plot RUN_A RUN_B ... [--out DIR]   the runs' key curves overlaid -> DIR/compare.png
                                               (e.g. SAPO vs GRPO on one recipe)

The summary figure has one panel per group of metrics that the run logged (reward, accuracy, loss, response
length, entropy, SAPO gate statistics, grad norm / lr, MoE routing, time per phase, ...); a panel whose keys
are absent is left out, and metrics that no panel knows get a panel per ``prefix/`` so that nothing logged
goes unseen. All panels share the step axis. Noisy per-step curves are drawn faint with a debiased exponential
moving average on top (the smoothing TensorBoard uses). ``null`` values (non-finite numbers, see
``sapo_vl.tracking``) are gaps.

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas: no pyplot global state, no display.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib as mpl
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sapo_vl._jsonl import METRICS_FILE, read_metrics

# bookkeeping, not curves: counts of records / held-out prompts, micro-batches and optimizer steps per step
NOT_PLOTTED = frozenset({"step", "wall_time", "epoch", "eval/n", "micro_batches", "optimizer_steps",
                         "data/train_records", "data/eval_records", "data/train_skipped", "data/eval_skipped"})
NEVER_SMOOTHED = frozenset({"lr"})  # deterministic schedules: an EMA would only distort them

Series = tuple[np.ndarray, np.ndarray]  # (steps (N,), values (N,) float64 with NaN for null)


# ----------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------
def metrics_path(run: str | Path) -> Path:
    """``RUN_DIR`` -> ``RUN_DIR/metrics.jsonl``; a path to a ``.jsonl`` file is taken as is."""
    run = Path(run)
    return run if run.suffix == ".jsonl" else run / METRICS_FILE


def load_metrics(path: str | Path) -> dict[str, Series]:
    """Read a metrics JSONL file into ``{key: (steps, values)}``, sorted by step.

    Lines for the same step are merged (a later line wins for a key logged twice). Unreadable lines, such as a
    half-written last line after a crash, are skipped with a warning naming the line. Non-numeric values are
    ignored.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file holds no step with data.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no metrics file at {path} (expected a run directory with {METRICS_FILE})")
    by_step: dict[int, dict[str, float]] = {}
    for lineno, record, problem in read_metrics(path):
        if record is None:
            warnings.warn(f"{path}:{lineno}: skipping a line that is {problem}", stacklevel=2)
            continue
        row = by_step.setdefault(record["step"], {})
        for key, value in record.items():
            if value is None:
                row[key] = math.nan
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                row[key] = float(value)
    if not by_step:
        raise ValueError(f"{path} is empty: the run has not logged any step yet")
    out: dict[str, Series] = {}
    for key in sorted({k for row in by_step.values() for k in row} - {"step"}):
        xs = [s for s in sorted(by_step) if key in by_step[s]]
        out[key] = (np.asarray(xs, dtype=np.int64), np.asarray([by_step[s][key] for s in xs], dtype=np.float64))
    return out


# ----------------------------------------------------------------------------------------------------------
# Smoothing
# ----------------------------------------------------------------------------------------------------------
def auto_smoothing(n_points: int) -> float:
    """An EMA weight that suits the curve length: 0 (none) up to 15 points, rising to 0.95 at 300+ points."""
    return float(min(0.95, max(0.0, 1.0 - 15.0 / max(n_points, 1))))


def ema(values: np.ndarray, weight: float) -> np.ndarray:
    """Debiased exponential moving average, as in TensorBoard: s_t = w s_{t-1} + (1 - w) x_t, shown as
    s_t / (1 - w^t).

    NaN inputs are skipped: they neither update the average nor count toward the debiasing; the output there
    repeats the last average (NaN before the first finite value).
    """
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    out = np.full(values.shape, np.nan)  # (N,)
    acc, count = 0.0, 0
    for i, x in enumerate(values):
        if math.isfinite(x):
            acc = weight * acc + (1.0 - weight) * x
            count += 1
        if count:
            out[i] = acc / (1.0 - weight**count)
    return out


# ----------------------------------------------------------------------------------------------------------
# Panels
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Panel:
    """One subplot: which keys it draws and how.

    ``keys`` are exact names, ``prefix`` adds every key that starts with it and ``infix`` every key that holds it
    (minus ``exclude``); ``right``
    keys go on a twin y axis. ``style``: "smooth" (faint raw + EMA), "line", "points" (sparse, e.g. eval),
    "stack" (stacked areas, ``total`` drawn as a dashed line on top) or "signed" (``*_pos`` solid, ``*_neg``
    dashed, one colour per statistic).
    """

    title: str
    ylabel: str
    name: str  # file name stem of the panel's own PNG
    keys: tuple[str, ...] = ()
    prefix: str | None = None
    infix: str | None = None
    exclude: tuple[str, ...] = ()
    right: tuple[str, ...] = ()
    right_label: str = ""
    style: str = "line"
    total: str | None = None
    logy: bool = False

    def left_keys(self, available: Sequence[str]) -> list[str]:
        found = [k for k in self.keys if k in available]
        if self.prefix is not None or self.infix is not None:
            found += sorted(k for k in available if k not in self.exclude and k not in found
                            and (self.prefix is None or k.startswith(self.prefix))
                            and (self.infix is None or self.infix in k))
        return found

    def all_keys(self, available: Sequence[str]) -> list[str]:
        return self.left_keys(available) + [k for k in (*self.right, self.total) if k is not None and k in available]


SUMMARY_PANELS: tuple[Panel, ...] = (
    Panel("Reward (mean over rollouts)", "reward", "reward", keys=("reward/mean",), right=("reward/std",),
          right_label="reward std within batch", style="smooth"),
    Panel("Accuracy", "accuracy", "accuracy", keys=("accuracy",), style="smooth"),
    Panel("Held-out evaluation", "score", "eval", prefix="eval/", style="points"),
    Panel("Reward and accuracy by data source", "value", "by_source", infix="/by_source/", style="smooth"),
    Panel("Reward components", "reward", "reward_components", prefix="reward/",
          exclude=("reward/mean", "reward/std"), style="smooth"),
    Panel("Advantages", "advantage", "advantages", prefix="adv/", style="smooth"),
    Panel("Policy loss & KL", "loss", "loss", keys=("loss",), right=("kl",), right_label="KL",
          style="smooth"),
    Panel("Response length", "tokens", "response_length", prefix="response_length/",
          right=("truncated_frac",), right_label="truncated fraction", style="smooth"),
    Panel("Token entropy", "entropy (nats)", "entropy", keys=("entropy",), style="smooth"),
    Panel("SAPO soft gate (solid A>0, dashed A<0)", "gate statistic", "sapo_gate", prefix="sapo/",
          style="signed"),
    # the clipping losses (grpo, gspo, gspo-token, cispo) all report these keys (sapo_vl.algos.losses)
    Panel("Clipped tokens (grpo / gspo / cispo)", "fraction of response tokens", "clipping",
          keys=("clip_frac", "clip_frac_low", "clip_frac_high", "dual_clip_frac"), style="smooth"),
    Panel("Gradient norm & learning rate", "grad norm", "grad_norm_lr", keys=("grad_norm",), right=("lr",),
          right_label="learning rate", style="smooth", logy=True),
    Panel("MoE load balance", "load imbalance (max/mean)", "moe_balance", keys=("moe/load_imbalance",),
          right=("moe/router_entropy",), right_label="router entropy", style="smooth"),
    Panel("MoE routing", "value", "moe_routing", prefix="moe/",
          exclude=("moe/load_imbalance", "moe/router_entropy"), style="smooth"),
    Panel("Time per step by phase", "seconds", "time", prefix="time/", exclude=("time/step",), style="stack",
          total="time/step"),
    Panel("Importance ratio pi/pi_old & approx KL", "ratio", "ratio", prefix="ratio/", right=("approx_kl",),
          right_label="approx KL(old||new)", style="smooth"),
    Panel("Throughput", "tokens / s", "throughput", prefix="throughput/", style="smooth"),
    Panel("Groups filtered (all-equal rewards)", "groups", "filtered_groups", keys=("filtered_groups",),
          style="smooth"),
)


def select_panels(available: Sequence[str], panels: Sequence[Panel] = SUMMARY_PANELS,
                  ) -> list[tuple[Panel, list[str]]]:
    """The panels that have data, each with its keys; keys no panel claims get one panel per ``prefix/``."""
    chosen, claimed = [], set(NOT_PLOTTED)
    for panel in panels:
        keys = [k for k in panel.all_keys(available) if k not in claimed]
        if keys:
            chosen.append((panel, keys))
            claimed.update(keys)
    leftovers: dict[str, list[str]] = {}
    for key in sorted(set(available) - claimed):
        leftovers.setdefault(key.split("/", 1)[0] if "/" in key else "other", []).append(key)
    for group, keys in leftovers.items():
        chosen.append((Panel(group, "value", _slug(group), keys=tuple(keys), style="smooth"), keys))
    return chosen


# ----------------------------------------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------------------------------------
def _new_figure(n_panels: int, ncols: int, panel_size=(5.4, 3.3), title_space: float = 0.9):
    """A grid of panels sharing the step axis; ``title_space`` inches are kept above it for a suptitle."""
    ncols = max(1, min(ncols, n_panels))
    nrows = math.ceil(n_panels / ncols)
    width, height = panel_size[0] * ncols, panel_size[1] * nrows + title_space
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    # Fixed margins in inches: room for a y label on both sides of each panel (twin axes) and for a suptitle.
    # Constrained layout looks the same on this regular grid but measures every text artist (seconds).
    left, right, gap_w, gap_h, top, bottom = 0.8, 0.85, 1.75, 0.75, title_space + 0.05, 0.55
    axes_w = (width - left - right - (ncols - 1) * gap_w) / ncols
    axes_h = (height - top - bottom - (nrows - 1) * gap_h) / nrows
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height,
                        top=1 - top / height, wspace=gap_w / axes_w, hspace=gap_h / axes_h)
    axes = fig.subplots(nrows, ncols, sharex=True, squeeze=False).ravel()
    for ax in axes[n_panels:]:  # empty slots: drop them and give the panel above its step tick labels back
        ax.remove()
    for i, ax in enumerate(axes[:n_panels]):
        if i + ncols >= n_panels:
            ax.xaxis.set_tick_params(labelbottom=True)
            ax.set_xlabel("step")
    return fig, list(axes[:n_panels])


def _label(key: str, panel: Panel) -> str:
    return key.removeprefix(panel.prefix) if panel.prefix and key != panel.prefix else key


def _plot_smooth(ax, x, y, color, label, smoothing, ls="-", key=""):
    """Raw values faint, their EMA bold (not short curves or ``NEVER_SMOOTHED`` keys). Returns its handle."""
    weight = auto_smoothing(len(x)) if smoothing is None else smoothing
    if weight == 0.0 or key in NEVER_SMOOTHED:
        return ax.plot(x, y, color=color, lw=1.4, ls=ls, label=label)[0]
    ax.plot(x, y, color=color, lw=0.7, alpha=0.28)
    return ax.plot(x, ema(y, weight), color=color, lw=1.8, ls=ls, label=label)[0]


def _signed_style(keys: list[str]) -> dict[str, tuple[int, str]]:
    """``gate_mean_pos`` / ``gate_mean_neg`` -> same colour index, solid / dashed line."""
    stats: list[str] = []
    style = {}
    for key in keys:
        match = re.match(r"(.*?)_?(pos|neg)$", key)
        stat, sign = (match.group(1), match.group(2)) if match else (key, "")
        if stat not in stats:
            stats.append(stat)
        style[key] = (stats.index(stat), "--" if sign == "neg" else "-")
    return style


def _draw_stack(ax, panel: Panel, keys: list[str], data: dict[str, Series], colors) -> list:
    parts = [k for k in keys if k != panel.total]
    steps = np.unique(np.concatenate([data[k][0] for k in parts]))  # (S,)
    stack = [np.nan_to_num(np.interp(steps, *data[k], left=np.nan, right=np.nan)) for k in parts]
    handles = ax.stackplot(steps, *stack, labels=[_label(k, panel) for k in parts],
                           colors=[colors[i % len(colors)] for i in range(len(parts))], alpha=0.75)
    if panel.total in keys:
        handles += ax.plot(*data[panel.total], color="black", ls="--", lw=1.2, label="total (time/step)")
    return list(handles)


def draw_panel(ax, panel: Panel, keys: list[str], data: dict[str, Series], smoothing: float | None) -> None:
    """Draw one panel's keys onto ``ax`` (and a twin axis for ``panel.right`` keys)."""
    colors = mpl.rcParams["axes.prop_cycle"].by_key()["color"]
    left = [k for k in keys if k not in panel.right]
    right = [k for k in keys if k in panel.right]
    if panel.style == "stack":
        handles = _draw_stack(ax, panel, left, data, colors)
    else:
        handles, signed = [], _signed_style(left) if panel.style == "signed" else {}
        for i, key in enumerate(left):
            x, y = data[key]
            label = _label(key, panel)
            if panel.style == "points":
                handles += ax.plot(x, y, "o-", ms=3.5, lw=1.2, color=colors[i % len(colors)], label=label)
            elif panel.style in ("smooth", "signed"):
                c, ls = signed.get(key, (i, "-"))
                handles.append(_plot_smooth(ax, x, y, colors[c % len(colors)], label, smoothing, ls, key))
            else:
                handles += ax.plot(x, y, lw=1.4, color=colors[i % len(colors)], label=label)
    positive = np.concatenate([data[k][1] for k in left]) if left else np.array([])
    positive = positive[np.isfinite(positive) & (positive > 0)]
    if panel.logy and positive.size and positive.max() / positive.min() > 100:
        ax.set_yscale("log")
    ax.set_title(panel.title, fontsize=10.5)
    ax.set_ylabel(panel.ylabel)
    ax.grid(alpha=0.3)
    top = ax
    if right:  # on a twin y axis, dashed, in colours that differ from the left's
        top = ax.twinx()  # drawn above ax: the legend goes on it so that no curve covers the legend
        shifted = colors[len(left) + 2:] + colors[:len(left) + 2]
        weight = smoothing if panel.style == "smooth" else 0.0
        handles += [_plot_smooth(top, *data[key], shifted[j % len(shifted)], f"{key} (right axis)", weight, "--", key)
                    for j, key in enumerate(right)]
        top.set_ylabel(panel.right_label)
    top.legend(handles=handles, fontsize=7.5, loc="best", framealpha=0.85, ncols=2 if len(handles) > 4 else 1)


# ----------------------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------------------
def _title(name: str, data: dict[str, Series], smoothing: float | None) -> str:
    steps = np.concatenate([x for x, _ in data.values()])
    title = f"{name}: steps {steps.min()}-{steps.max()}"
    if "reward/mean" in data:
        y = data["reward/mean"][1]
        y = y[np.isfinite(y)]
        if y.size:
            tail = y[-max(1, y.size // 10):]
            title += f"  |  mean reward over the last 10% of steps: {tail.mean():.3f}"
    return title + "\n" + _smoothing_note(data.values(), smoothing)


def _smoothing_note(series, smoothing: float | None) -> str:
    longest = max(len(x) for x, _ in series)
    weight = auto_smoothing(longest) if smoothing is None else smoothing
    if weight == 0.0:
        return "curves: raw per-step values"
    return f"faint: raw per-step values; bold: debiased EMA, weight {weight:.2f}"


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None, *, smoothing: float | None = None,
             panels: bool = False, ncols: int = 3, dpi: int = 110) -> list[Path]:
    """Write ``summary.png`` (and, with ``panels=True``, one PNG per panel) for one run. Returns the paths.

    ``out_dir`` defaults to ``RUN_DIR/plots``; ``smoothing`` is the EMA weight in [0, 1), None picks one from
    the curve length.
    """
    path = metrics_path(run_dir)
    run_dir = path.parent
    data = load_metrics(path)
    chosen = select_panels(list(data))
    if not chosen:
        raise ValueError(f"{path} holds no plottable metric (only {sorted(NOT_PLOTTED & set(data))})")
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    fig, axes = _new_figure(len(chosen), ncols)
    for ax, (panel, keys) in zip(axes, chosen, strict=True):
        draw_panel(ax, panel, keys, data, smoothing)
    title = _title(run_dir.resolve().name, data, smoothing)
    fig.suptitle(title, fontsize=12, y=1 - 0.15 / fig.get_figheight(), va="top")
    written = [out_dir / "summary.png"]
    fig.savefig(written[0], dpi=dpi)
    if panels:
        for panel, keys in chosen:
            single, (ax,) = _new_figure(1, 1, panel_size=(7.0, 4.2), title_space=0.3)
            draw_panel(ax, panel, keys, data, smoothing)
            ax.set_title(f"{run_dir.resolve().name}: {panel.title}", fontsize=10.5)
            written.append(out_dir / f"{panel.name}.png")
            single.savefig(written[-1], dpi=dpi)
    return written


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


COMPARE_KEYS: tuple[tuple[str, str, str], ...] = (  # (key, title, style)
    ("reward/mean", "Reward (mean over rollouts)", "smooth"),
    ("accuracy", "Training accuracy", "smooth"),
    ("eval/accuracy", "Held-out accuracy", "points"),
    ("response_length/mean", "Mean response length (tokens)", "smooth"),
    ("truncated_frac", "Truncated fraction", "smooth"),
    ("entropy", "Token entropy", "smooth"),
    ("kl", "KL", "smooth"),
    ("grad_norm", "Gradient norm", "smooth"),
    ("time/step", "Seconds per step", "smooth"),
)


def run_labels(runs: Sequence[str | Path]) -> list[str]:
    """Directory names, or the full paths where two runs share a name."""
    names = [metrics_path(r).parent.resolve().name for r in runs]
    return names if len(set(names)) == len(names) else [str(metrics_path(r).parent) for r in runs]


def plot_compare(runs: Sequence[str | Path], out_path: str | Path, *, labels: Sequence[str] | None = None,
                 smoothing: float | None = None, ncols: int = 3, dpi: int = 110) -> Path:
    """Overlay the key curves of several runs (one colour per run) in one PNG at ``out_path``."""
    if len(runs) < 2:
        raise ValueError(f"plot_compare needs at least two runs, got {len(runs)}")
    labels = list(labels) if labels is not None else run_labels(runs)
    if len(labels) != len(runs):
        raise ValueError(f"{len(labels)} labels given for {len(runs)} runs")
    datas = [load_metrics(metrics_path(r)) for r in runs]
    shown = [spec for spec in COMPARE_KEYS if any(spec[0] in d for d in datas)]
    if not shown:
        raise ValueError(f"none of the runs logged any of {[k for k, _, _ in COMPARE_KEYS]}")

    colors = mpl.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = _new_figure(len(shown), ncols)
    for ax, (key, title, style) in zip(axes, shown, strict=True):
        for i, (label, data) in enumerate(zip(labels, datas, strict=True)):
            if key not in data:
                continue
            x, y = data[key]
            color = colors[i % len(colors)]
            if style == "points":
                ax.plot(x, y, "o-", ms=3.5, lw=1.2, color=color, label=label)
            else:
                _plot_smooth(ax, x, y, color, label, smoothing)
        ax.set_title(title, fontsize=10.5)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7.5, loc="best", framealpha=0.8)
    note = _smoothing_note([s for d in datas for s in d.values()], smoothing)
    fig.suptitle("Comparison: " + " vs ".join(labels) + "\n" + note, fontsize=12,
                 y=1 - 0.15 / fig.get_figheight(), va="top")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=dpi)
    return out_path
