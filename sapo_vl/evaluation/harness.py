"""The evaluation loop: for each task, load records, get completions (generate with the policy through
``sapo_vl.rollout.generate`` or read a samples file), score them with the task's verifier, append per-sample rows
to a resumable log, then compute the task's official metric (first), Pass@1 / pass@k (/ maj@n) and write
lmms-eval style outputs.

Read top to bottom: :func:`run_eval` -> :func:`evaluate_task` -> :func:`_completions_for` / ``score_docs``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
import torch

from sapo_vl import __version__
from sapo_vl.data import decode_images
from sapo_vl.evaluation.metrics import mean_with_stderr, task_metrics
from sapo_vl.evaluation.official import OFFICIAL
from sapo_vl.evaluation.samples import SampleLog, read_samples_file, run_key
from sapo_vl.evaluation.scoring import score_docs
from sapo_vl.errors import UserError
from sapo_vl.evaluation.tasks import GenerationSpec, TaskSpec, load_task_records, resolve_task
from sapo_vl.models import load_policy
from sapo_vl.rollout import HFEngine, PromptFormat, SamplingParams, generate_completions
from sapo_vl.rundir import RunLock
from sapo_vl.sections import ModelConfig, validated
from sapo_vl.evaluation.writers import (
    file_sha256,
    git_hash,
    markdown_table,
    model_fingerprint,
    sanitize_model_name,
    task_result_entry,
    write_code_exports,
    write_json,
)


class EvalInputError(UserError, ValueError):
    """Inconsistent run options or inputs (both/neither of --model/--samples, unknown sample ids, ...)."""


@dataclass
class EvalConfig:
    """One ``sapo-vl eval`` run. ``None`` overrides keep the task file's value."""

    tasks: list[str]
    output_dir: str
    model: str | None = None  # a model directory (generation through sapo_vl.rollout)
    samples: str | None = None  # a samples JSONL (completions generated elsewhere)
    limit: int | None = None  # first N docs of each task
    n: int | None = None
    k: list[int] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_new_tokens: int | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    seed: int | None = None
    batch_size: int = 8  # docs per generation call (and per log append)
    dtype: str = "auto"
    device: str | None = None
    data_paths: dict[str, str] = field(default_factory=dict)  # task name -> local data path
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if (self.model is None) == (self.samples is None):
            raise EvalInputError("give exactly one of --model PATH or --samples FILE")
        if self.limit is not None and self.limit < 1:
            raise EvalInputError(f"--limit must be >= 1, got {self.limit}")
        if self.batch_size < 1:
            raise EvalInputError(f"--batch-size must be >= 1, got {self.batch_size}")


@dataclass
class TaskRun:
    """What one task produced: its rows (one per scored doc) and bookkeeping for the results file."""

    spec: TaskSpec
    generation: dict[str, Any]
    rows: list[dict]
    original: int
    missing: int
    seconds: float
    code_prompts: dict[str, str] = field(default_factory=dict)  # doc id -> code prompt, for code exports


class _Policy:
    """Loads the model once, on first use, so a fully resumed run never touches the weights."""

    def __init__(self, cfg: EvalConfig):
        self.cfg = cfg
        self.info = model_fingerprint(cfg.model)  # recorded in results.json and part of every run key
        self.fingerprint = self.info["sha256"]
        self._loaded: tuple[Any, Any] | None = None
        self.device: str | None = None  # set on load

    def get(self) -> tuple[Any, Any]:
        if self._loaded is None:
            self.device = self.cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
            self._loaded = load_policy(self.cfg.model, ModelConfig(dtype=self.cfg.dtype), self.device)
        return self._loaded


def effective_generation(spec: TaskSpec, cfg: EvalConfig) -> GenerationSpec:
    """The task's generation settings with the run's overrides applied."""
    overrides = {k: getattr(cfg, k) for k in GenerationSpec.model_fields if getattr(cfg, k, None) is not None}
    return validated(GenerationSpec, {**spec.generation.model_dump(), **overrides},
                     f"task {spec.name}: generation settings", EvalInputError)


def _generate(policy: _Policy, records: list[dict], gen: GenerationSpec, batch_size: int) -> list[list[str]]:
    """n completions per doc through the training rollout code; images are decoded here, one chunk at a time."""
    model, processor = policy.get()
    if gen.seed is not None:
        torch.manual_seed(gen.seed + int(records[0]["meta"].get("index", 0)))
    decoded = [{**r, "images": decode_images(r["images"])} for r in records]
    outs = generate_completions(HFEngine(model, processor, batch_size=batch_size),
                                PromptFormat(processor, None, gen.min_pixels, gen.max_pixels), decoded,
                                SamplingParams(gen.max_new_tokens, gen.temperature, gen.top_p, gen.top_k), n=gen.n)
    if len(outs) != len(records) or any(len(o) != gen.n for o in outs):
        raise RuntimeError(f"generate_completions returned {[len(o) for o in outs]} completions for "
                           f"{len(records)} records x n={gen.n}")
    return [list(o) for o in outs]


def _result_parts(spec: TaskSpec) -> dict[str, Any]:
    """The parts of a task definition that change a doc's result (not its description, k list or fixture)."""
    cfg = spec.to_config()
    keep = ("name", "version", "source", "id_field", "fields", "adapter", "prompt", "images", "answer", "verifier")
    parts = {k: cfg[k] for k in keep} | {"source": {**cfg["source"], "path": None, "hint": None, "env": None}}
    return parts | ({"official": spec.official} if spec.official in OFFICIAL else {})  # it adds a field to rows


def _todo(records: list[dict], done: dict[str, dict], provided: dict[str, list[str]] | None) -> list[dict]:
    """Docs still to score: not in the log, or (samples mode) logged with other completions."""
    if provided is None:
        return [r for r in records if r["id"] not in done]
    return [r for r in records if r["id"] in provided and done.get(r["id"], {}).get("resps") != provided[r["id"]]]


def _check_sample_ids(task: str, records: list[dict], provided: dict[str, list[str]], complete: bool) -> None:
    """A samples file naming docs the task does not have is a mistake (wrong task, wrong ids): say which. With
    ``--limit`` (not ``complete``) ids beyond the first docs are expected, but said."""
    unknown = sorted(set(provided) - {r["id"] for r in records})
    if unknown and not complete:
        print(f"sapo-vl eval: warning: {len(unknown)} doc ids of the samples file are not among the {len(records)} "
              f"docs --limit keeps for task {task!r} (e.g. {unknown[:3]}); they are not scored", file=sys.stderr)
    elif unknown:
        raise EvalInputError(f"samples file has {len(unknown)} doc ids that task {task!r} does not have, e.g. "
                             f"{unknown[:5]}; ids look like {[r['id'] for r in records[:3]]}")
    empty = [d for d, comps in provided.items() if not comps]
    if empty:
        raise EvalInputError(f"samples file gives no completions for docs {empty[:5]} of task {task!r}")


def _progress(enabled: bool):
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), disable=not enabled, transient=False)


def evaluate_task(spec: TaskSpec, cfg: EvalConfig, policy: _Policy | None,
                  provided: dict[str, list[str]] | None, progress) -> TaskRun:
    """Score one task into ``samples_<task>.jsonl`` (skipping finished docs) and return its rows."""
    start = time.time()
    records = load_task_records(spec, cfg.data_paths.get(spec.name), cfg.limit)
    original = records.report.total
    if provided is not None:
        _check_sample_ids(spec.name, records, provided, complete=cfg.limit is None)
    gen = effective_generation(spec, cfg)
    gen_kwargs = gen.model_dump() if provided is None else {"source": "samples file"}
    key = run_key({"task": _result_parts(spec), "generation": gen_kwargs,
                   "model": policy.fingerprint if policy is not None else "samples"})
    log = SampleLog(Path(cfg.output_dir) / f"samples_{spec.name}.jsonl", key, overwrite=cfg.overwrite)
    todo = _todo(records, log.read(), provided)
    bar = progress.add_task(spec.name, total=len(todo))
    for lo in range(0, len(todo), cfg.batch_size):
        chunk = todo[lo: lo + cfg.batch_size]
        if provided is not None:
            comps = [provided[r["id"]] for r in chunk]
        else:
            comps = _generate(policy, chunk, gen, cfg.batch_size)
        rows = score_docs(chunk, comps, task=spec.name, columns=list(spec.verifier.columns),
                          kwargs=spec.verifier.kwargs, threshold=spec.verifier.threshold, official=spec.official)
        log.append([{**row, "gen_kwargs": gen_kwargs} for row in rows])
        progress.advance(bar, len(chunk))
    done = log.read()
    wanted = [r["id"] for r in records if provided is None or r["id"] in provided]
    missing = len(records) - len(wanted)
    rows = [done[i] for i in wanted if i in done]
    if missing:
        print(f"sapo-vl eval: warning: task {spec.name}: the samples file covers {len(wanted)} of {len(records)} docs; "
              "the metrics are over those only", file=sys.stderr)
    code_prompts = {r["id"]: r.get("code_prefix") or "" for r in records} if spec.exports else {}
    return TaskRun(spec, gen_kwargs, rows, original, missing, time.time() - start, code_prompts)


def _task_entry(run: TaskRun, ks: list[int]) -> tuple[dict, dict]:
    """(lmms-eval ``results`` entry, ``higher_is_better`` entry) of one task; the official metric comes first."""
    scored = [r for r in run.rows if r["status"] != "not_applicable"]
    ns = sorted({r["n"] for r in scored})
    extra = {"official_metric": run.spec.official, "n_docs": len(scored), "n_per_doc": ns[0] if len(ns) == 1 else ns,
             "n_not_applicable": len(run.rows) - len(scored), "n_missing": run.missing,
             "n_partial": sum(r["status"] == "partial" for r in scored)}
    if not scored:
        return task_result_entry(run.spec.name, {}, extra), {}
    counts = [(r["n"], r["n_correct"]) for r in scored]
    majority = [r["maj_correct"] for r in scored]
    metrics = task_metrics(counts, ks, None if None in majority else majority,
                           [r["reward_mean"] for r in scored])
    official = [sum(r["official"]) / len(r["official"]) for r in scored if r.get("official")]
    if run.spec.official in OFFICIAL and official:  # the mean over docs (with a gold) of a doc's mean
        name = run.spec.official
        mean, stderr = mean_with_stderr(official)
        metrics = {name: mean, f"{name}_stderr": stderr, **metrics}
    return task_result_entry(run.spec.name, metrics, extra), {m: True for m in metrics if "stderr" not in m}


def _model_info(cfg: EvalConfig, policy: _Policy | None) -> dict[str, Any]:
    if policy is not None:
        return {"model": "sapo_vl", "model_args": f"pretrained={policy.info['path']}",
                "model_fingerprint": policy.info, "model_name": cfg.model}
    return {"model": "samples", "model_args": f"samples={cfg.samples}",
            "samples_file": {"path": str(Path(cfg.samples).resolve()), "sha256": file_sha256(cfg.samples)},
            "model_name": cfg.samples}


def build_results(runs: list[TaskRun], cfg: EvalConfig, policy: _Policy | None, start: float) -> dict:
    """The results JSON in lmms-eval's layout (see ``writers.py``)."""
    info = _model_info(cfg, policy)
    out: dict[str, Any] = {"results": {}, "group_subtasks": {}, "configs": {}, "versions": {}, "n-shot": {},
                           "higher_is_better": {}, "n-samples": {}}
    for run in runs:
        name = run.spec.name
        ks = cfg.k or run.spec.k
        out["results"][name], out["higher_is_better"][name] = _task_entry(run, ks)
        out["configs"][name] = {**run.spec.to_config(), "generation_effective": run.generation, "k_effective": ks}
        out["versions"][name] = run.spec.version
        out["n-shot"][name] = 0
        out["n-samples"][name] = {"original": run.original, "effective": len(run.rows)}
    end = time.time()
    out["config"] = {**{k: v for k, v in info.items() if k != "model_name"}, "batch_size": cfg.batch_size,
                     "device": (policy.device if policy is not None else None) or cfg.device,
                     "dtype": cfg.dtype, "limit": cfg.limit,
                     "gen_kwargs": {r.spec.name: r.generation for r in runs}}
    out.update({"git_hash": git_hash(), "date": start, "sapo_vl_version": __version__,
                "model_name": info["model_name"], "model_name_sanitized": sanitize_model_name(info["model_name"]),
                "start_time": datetime.fromtimestamp(start, timezone.utc).isoformat(),
                "end_time": datetime.fromtimestamp(end, timezone.utc).isoformat(),
                "total_evaluation_time_seconds": f"{end - start:.2f}"})
    return out


def run_eval(cfg: EvalConfig) -> dict[str, Any]:
    """Evaluate every task of ``cfg`` and write results.json, samples_<task>.jsonl, summary.md and exports (the
    output directory is locked: two evaluations never append to the same sample logs)."""
    specs = [resolve_task(t) for t in cfg.tasks]
    with RunLock(cfg.output_dir, "evaluation"):
        return _run_eval(cfg, specs)


def _run_eval(cfg: EvalConfig, specs: list[TaskSpec]) -> dict[str, Any]:
    start = time.time()
    cfg.data_paths = {resolve_alias(specs, cfg.tasks, k): v for k, v in cfg.data_paths.items()}
    provided = read_samples_file(cfg.samples, [s.name for s in specs]) if cfg.samples else None
    policy = _Policy(cfg) if cfg.model is not None else None
    runs = []
    with _progress(cfg.progress and sys.stderr.isatty()) as progress:
        for spec in specs:
            runs.append(evaluate_task(spec, cfg, policy, provided[spec.name] if provided else None, progress))
    results = build_results(runs, cfg, policy, start)
    out = Path(cfg.output_dir)
    write_json(out / "results.json", results)
    table = markdown_table(results)
    (out / "summary.md").write_text(table, encoding="utf-8")
    for run in runs:
        if run.spec.exports:
            write_code_exports(out, run.spec.name, run.rows, run.code_prompts, run.spec.exports)
    return results


def resolve_alias(specs: list[TaskSpec], names: list[str], key: str) -> str:
    """``--data-path`` keys may name a task as given on the command line or by its YAML ``name``."""
    for spec, name in zip(specs, names):
        if key in (spec.name, name):
            return spec.name
    raise EvalInputError(f"--data-path names task {key!r}, which is not among --tasks {names}")
