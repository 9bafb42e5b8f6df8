"""Run logging for the training loop: our JSONL metrics file, accelerate's TensorBoard / wandb / trackio trackers,
progress.

The training loop calls :meth:`Tracker.log` once per optimizer step with a flat dict of scalars
(``{"reward/mean": 0.41, "loss": 0.012, ...}``) and :meth:`Progress.update` to show where it stands.

Files under ``RUN_DIR``
-----------------------
``metrics.jsonl``
    One JSON object per :meth:`Tracker.log` call, ``{"step": S, "wall_time": unix seconds, <metric>: value,
    ...}``, written and flushed line by line, so a crash loses at most the line being written. Non-finite
    values (NaN, +-inf) are written as ``null``: strict JSON has no NaN, and ``null`` keeps the file readable
    by every JSON parser (``json.loads``, ``jq``, pandas). Plots treat ``null`` as a gap. A step may appear on
    several lines (for instance train metrics and, later, held-out ``eval/accuracy`` for the same step);
    readers merge them.
``tb/``
    TensorBoard event files (``tensorboard --logdir RUN_DIR/tb``), flushed every step. Non-finite values are
    passed through as NaN/inf, which TensorBoard shows as such.
``run.json``
    What was run: project, run name, backends, start time, the step resumed from, and the config dict.

Resuming
--------
``Tracker(..., resume_step=S)`` continues a run whose last completed step is ``S``: lines of ``metrics.jsonl``
with ``step > S`` are dropped (they belong to work after the checkpoint that is being redone) and TensorBoard
events with ``step > S`` are purged, so no step appears twice. ``resume_step=None`` starts afresh; an existing
``metrics.jsonl`` is then kept as ``metrics.jsonl.bak`` rather than silently overwritten.

Processes
---------
Under ``accelerate`` / DDP only the main process logs: with ``is_main_process=False`` the tracker creates no
file, opens no backend, and every call is a no-op. :class:`Progress` is likewise silent there.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Column
from typing_extensions import Self

from sapo_vl._jsonl import METRICS_FILE, read_metrics

BACKENDS = ("jsonl", "tensorboard", "wandb", "trackio")
TB_DIR = "tb"
RUN_FILE = "run.json"


# ----------------------------------------------------------------------------------------------------------
# Values
# ----------------------------------------------------------------------------------------------------------
def to_scalar(key: str, value: Any) -> float | int | None:
    """One metric value as a python int/float (or None): python numbers and bools, numpy scalars, one-element
    torch tensors / numpy arrays; anything else is a ValueError naming the key."""
    if hasattr(value, "numel"):  # torch.Tensor
        if value.numel() != 1:
            raise ValueError(f"metric {key!r}: expected a scalar, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    elif hasattr(value, "item") and getattr(value, "size", 0) == 1:  # numpy scalar / one-element array
        value = value.item()
    if value is None or isinstance(value, (bool, int, float)):
        return int(value) if isinstance(value, bool) else value
    raise ValueError(f"metric {key!r}: expected an int/float scalar, got {type(value).__name__} ({repr(value)[:80]})")


def clean_metrics(metrics: Mapping[str, Any], step: int) -> dict[str, float | int | None]:
    """Validate a flat metrics dict and convert its values to python scalars.

    A ``"step"`` key, if present, must equal ``step`` (a mismatch means the caller logs at the wrong step).
    """
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a flat dict of scalars, got {type(metrics).__name__}")
    out: dict[str, float | int | None] = {}
    for key, value in metrics.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"metric names must be non-empty strings, got {key!r}")
        if isinstance(value, Mapping):
            raise TypeError(f"metric {key!r}: nested dicts are not supported; flatten to '{key}/<name>' keys")
        out[key] = to_scalar(key, value)
    if "step" in out and out["step"] != step:
        raise ValueError(f"metrics['step'] = {out['step']} disagrees with log(step={step})")
    out.pop("step", None)
    return out


# ----------------------------------------------------------------------------------------------------------
# metrics.jsonl
# ----------------------------------------------------------------------------------------------------------
def truncate_metrics_file(path: Path, resume_step: int) -> int:
    """Drop lines with ``step > resume_step`` and a half-written last line (a crash); return lines kept.

    The file is rewritten through a temporary file and an atomic rename, so a crash here loses nothing.
    """
    rows = list(read_metrics(path))
    kept: list[str] = []
    for lineno, record, problem in rows:
        if problem is not None and lineno != rows[-1][0]:  # a half-written last line: its step is redone anyway
            raise ValueError(f"{path}:{lineno}: {problem}, cannot resume from this metrics file")
        if record is not None and record["step"] <= resume_step:
            kept.append(json.dumps(record))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    os.replace(tmp, path)
    return len(kept)


class _JsonlBackend:
    def __init__(self, run_dir: Path, resume_step: int | None):
        path = run_dir / METRICS_FILE
        if path.exists():
            if resume_step is None:
                os.replace(path, path.with_name(path.name + ".bak"))
            else:
                truncate_metrics_file(path, resume_step)
        self.path = path
        self._fh: TextIO | None = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in finish())

    def log(self, metrics: dict, step: int) -> None:
        record = {"step": step, "wall_time": round(time.time(), 3)}
        # non-finite floats become null, so that the line is strict JSON (see the module docstring)
        record.update({k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in metrics.items()})
        self._fh.write(json.dumps(record, allow_nan=False) + "\n")
        self._fh.flush()

    def finish(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _start_service(name: str, run_dir: Path, project: str, run_name: str | None, config: Any,
                   resume_step: int | None, wandb_id: str | None):
    """accelerate's tracker for ``"tensorboard"``, ``"wandb"`` or ``"trackio"``, started."""
    from accelerate import PartialState  # imports torch: only when a service is asked for
    from accelerate.tracking import TensorBoardTracker, TrackioTracker, WandBTracker

    PartialState()  # accelerate's trackers log through it (already set up wherever the trainer's Accelerator is)
    if name == "tensorboard":  # events in RUN_DIR/tb; on resume, the steps after resume_step are purged
        tracker = TensorBoardTracker(TB_DIR, run_dir, purge_step=None if resume_step is None else resume_step + 1)
    elif name == "wandb":  # the same wandb run continues on resume (its id is kept in run.json)
        tracker = WandBTracker(project, name=run_name, config=config, dir=str(run_dir), id=wandb_id,
                               resume="allow" if wandb_id else None)
    else:
        tracker = TrackioTracker(project, name=run_name, config=config,
                                 **({"resume": "allow"} if resume_step is not None and run_name else {}))
    tracker.main_process_only = False  # Tracker itself decides which process logs
    try:
        tracker.start()
    except ImportError as err:
        raise ImportError(f"tracking backend {name!r} was requested but the {name!r} package is not installed "
                          f"(pip install {name}); or drop it from the backends list {list(BACKENDS[:2])}") from err
    if name == "tensorboard" and config is not None and resume_step is None:
        text = json.dumps(config, indent=2, sort_keys=True)
        tracker.writer.add_text("config", "```\n" + text + "\n```", global_step=0)
    return tracker


# ----------------------------------------------------------------------------------------------------------
# Tracker
# ----------------------------------------------------------------------------------------------------------
class Tracker:
    """Log a flat dict of scalar metrics per step to ``RUN_DIR/metrics.jsonl``, TensorBoard and services.

    Args:
        run_dir: the run's directory (created if missing, on the main process only).
        backends: any of ``"jsonl"``, ``"tensorboard"``, ``"wandb"``, ``"trackio"``. The last two need their
            package installed; asking for one that is missing raises ImportError naming it.
        project / run_name: passed to wandb / trackio and recorded in run.json.
        config: a dict (or dataclass) recorded in run.json, TensorBoard text and the services' run config.
        is_main_process: False on every other rank: nothing is created or written.
        resume_step: the last completed step of the run being resumed (see the module docstring), or None.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        backends: list[str] | tuple[str, ...] = ("jsonl", "tensorboard"),
        *,
        project: str = "sapo-vl",
        run_name: str | None = None,
        config: Mapping[str, Any] | Any | None = None,
        is_main_process: bool = True,
        resume_step: int | None = None,
    ):
        unknown = [b for b in backends if b not in BACKENDS]
        if unknown:
            raise ValueError(f"unknown tracking backend(s) {unknown}; choose from {list(BACKENDS)}")
        if len(set(backends)) != len(backends):
            raise ValueError(f"duplicate tracking backend in {list(backends)}")
        if resume_step is not None and (not isinstance(resume_step, int) or resume_step < 0):
            raise ValueError(f"resume_step must be a non-negative int or None, got {resume_step!r}")
        self.run_dir = Path(run_dir)
        self.enabled = bool(is_main_process)
        self.backends = list(backends)
        self.last_step: int | None = resume_step
        self._sinks: list[Any] = []
        if not self.enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if is_dataclass(config) and not isinstance(config, type):
            config = asdict(config)
        config = json.loads(json.dumps(config, default=str)) if config is not None else None
        wandb_id = self._read_run_file().get("wandb_id") if resume_step is not None else None
        try:
            for name in self.backends:
                self._sinks.append(_JsonlBackend(self.run_dir, resume_step) if name == "jsonl" else
                                   _start_service(name, self.run_dir, project, run_name, config, resume_step, wandb_id))
        except BaseException:
            self.close()
            raise
        self._write_run_file(project, run_name, config, resume_step)

    def _read_run_file(self) -> dict:
        path = self.run_dir / RUN_FILE
        try:
            return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        except json.JSONDecodeError:
            return {}

    def _write_run_file(self, project, run_name, config, resume_step) -> None:
        info = {
            "project": project,
            "run_name": run_name,
            "backends": self.backends,
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "resumed_from_step": resume_step,
            "config": config,
        }
        if "wandb" in self.backends:
            info["wandb_id"] = self._sinks[self.backends.index("wandb")].run.id
        (self.run_dir / RUN_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Record ``metrics`` at ``step`` in every backend. Steps must not go backwards (equal is allowed)."""
        if not self.enabled:
            return
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be a non-negative int, got {step!r}")
        if self.last_step is not None and step < self.last_step:
            raise ValueError(f"step went backwards: log(step={step}) after step {self.last_step}")
        clean = clean_metrics(metrics, step)
        present = {k: v for k, v in clean.items() if v is not None}  # services get no None values
        for sink in self._sinks:
            sink.log(clean if isinstance(sink, _JsonlBackend) else present, step=step)
        self.last_step = step

    def close(self) -> None:
        """Flush and close every backend. Safe to call twice."""
        sinks, self._sinks = self._sinks, []
        for sink in sinks:
            sink.finish()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------------------------------------
# Progress
# ----------------------------------------------------------------------------------------------------------
def format_duration(seconds: float) -> str:
    """``3725.2 -> '1:02:05'``; ``'?'`` for an unknown (non-finite or negative) duration."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _fmt(value: Any, digits: int) -> str:
    if value is None:
        return "nan"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if 0 < abs(value) < 1e-3 else f"{value:.{digits}f}"
    return str(value)


def summarize(metrics: Mapping[str, Any]) -> str:
    """The compact metric part of a progress line: reward, accuracy, eval accuracy, loss, seconds per step."""
    shown = (("reward/mean", "reward", 3), ("accuracy", "acc", 3), ("eval/accuracy", "eval_acc", 3),
             ("loss", "loss", 4))
    parts = [f"{label} {_fmt(metrics[key], digits)}" for key, label, digits in shown if key in metrics]
    if metrics.get("time/step") is not None:
        parts.append(f"{float(metrics['time/step']):.2f} s/step")
    return " | ".join(parts)


class Progress:
    """Where the training loop stands: a rich progress bar on a terminal, periodic plain lines otherwise.

    On a terminal it shows ``step/total``, a bar, elapsed time, ETA and the latest reward / accuracy / loss.
    When the stream is not a terminal (CI logs, ``nohup``, a pipe) it prints one compact line at the first
    update, then whenever ``every_steps`` divides the step or ``interval_s`` seconds have passed, and at the
    last step:

    step 12/500 (2.4%) | reward 0.412 | acc 0.380 | loss 0.0123 | 1.21 s/step | elapsed 0:00:15 | eta 0:09:50

    ``step`` counts completed optimizer steps; ``start_step`` is where a resumed run starts (the ETA uses only
    the steps done in this process). With ``enabled=False`` (non-main processes) nothing is ever printed.
    """

    def __init__(self, total_steps: int, start_step: int = 0, *, enabled: bool = True, stream: TextIO | None = None,
                 tty: bool | None = None, every_steps: int | None = None, interval_s: float = 10.0):
        if not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"total_steps must be a positive int, got {total_steps!r}")
        if not 0 <= start_step <= total_steps:
            raise ValueError(f"start_step must be in [0, {total_steps}], got {start_step!r}")
        if every_steps is not None and every_steps < 1:
            raise ValueError(f"every_steps must be a positive int or None, got {every_steps!r}")
        self.total, self.start_step, self.step, self.enabled = total_steps, start_step, start_step, enabled
        self.stream = stream if stream is not None else sys.stdout
        self.every_steps, self.interval_s = every_steps, interval_s
        self._metrics: Mapping[str, Any] = {}
        self._t0 = time.monotonic()
        self._printed: tuple[float, int] | None = None  # (time, step) of the last plain line
        self._rich = None
        if enabled and (tty if tty is not None else getattr(self.stream, "isatty", lambda: False)()):
            self._start_rich()

    def _start_rich(self) -> None:
        fixed = {"table_column": Column(no_wrap=True)}  # on a narrow terminal only the metrics text wraps
        self._rich = RichProgress(
            TextColumn("[bold]step", **fixed), MofNCompleteColumn(**fixed), BarColumn(bar_width=20, **fixed),
            TimeElapsedColumn(**fixed), TextColumn("eta", **fixed), TimeRemainingColumn(**fixed),
            TextColumn("{task.fields[summary]}", table_column=Column(no_wrap=False)),
            console=Console(file=self.stream, force_terminal=True), refresh_per_second=4,
        )
        self._task = self._rich.add_task("train", total=self.total, completed=self.start_step, summary="")
        self._rich.start()

    def line(self) -> str:
        """One plain progress line for the current state; the ETA is the mean time per step done in this process
        times the steps left."""
        elapsed, done = time.monotonic() - self._t0, self.step - self.start_step
        eta = elapsed / done * (self.total - self.step) if done > 0 else math.inf
        parts = (f"step {self.step}/{self.total} ({100.0 * self.step / self.total:.1f}%)", summarize(self._metrics),
                 f"elapsed {format_duration(elapsed)} | eta {format_duration(eta)}")
        return " | ".join(p for p in parts if p)

    def _print_line(self) -> None:
        print(self.line(), file=self.stream, flush=True)
        self._printed = (time.monotonic(), self.step)

    def update(self, step: int, metrics: Mapping[str, Any] | None = None) -> None:
        """Report that ``step`` optimizer steps are complete, with that step's metrics (optional)."""
        if not self.enabled:
            return
        self.step = min(int(step), self.total)
        self._metrics = dict(metrics) if metrics else self._metrics
        if self._rich is not None:
            self._rich.update(self._task, completed=self.step, summary=summarize(self._metrics))
        elif (self._printed is None or self.step >= self.total
              or (self.every_steps is not None and self.step % self.every_steps == 0)
              or time.monotonic() - self._printed[0] >= self.interval_s):
            self._print_line()

    def print(self, message: str) -> None:
        """Print a message without breaking the bar (above it on a terminal)."""
        if self.enabled and self._rich is not None:
            self._rich.console.print(message)
        elif self.enabled:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        """Stop the bar; in plain mode print the final state if it was not printed yet. Safe to call twice."""
        if self._rich is not None:
            self._rich.stop()
        elif self.enabled and self.step > self.start_step and (self._printed is None or self._printed[1] != self.step):
            self._print_line()
        self.enabled, self._rich = False, None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
