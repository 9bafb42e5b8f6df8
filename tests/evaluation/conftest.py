"""Helpers for evaluation tests: write samples files and run the harness quietly."""

import json
from pathlib import Path

import pytest

from sapo_vl.evaluation.harness import EvalConfig, run_eval

EVAL_DIR = Path(__file__).resolve().parents[2] / "eval"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture
def evaluate(tmp_path):
    """run_eval with --samples, no progress bar; returns (results, output dir)."""

    def run(tasks, samples_rows, out="out", **kw):
        samples = write_jsonl(tmp_path / "samples.jsonl", samples_rows)
        out_dir = tmp_path / out
        cfg = EvalConfig(tasks=tasks, output_dir=str(out_dir), samples=str(samples), progress=False, **kw)
        return run_eval(cfg), out_dir

    return run
