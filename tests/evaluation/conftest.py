"""The ``evaluate`` fixture: run the harness on a samples file, quietly."""

import pytest
from eval_helpers import write_jsonl

from sapo_vl.evaluation.harness import EvalConfig, run_eval


@pytest.fixture
def evaluate(tmp_path):
    """run_eval with --samples, no progress bar; returns (results, output dir)."""

    def run(tasks, samples_rows, out="out", **kw):
        samples = write_jsonl(tmp_path / "samples.jsonl", samples_rows)
        out_dir = tmp_path / out
        cfg = EvalConfig(tasks=tasks, output_dir=str(out_dir), samples=str(samples), progress=False, **kw)
        return run_eval(cfg), out_dir

    return run
