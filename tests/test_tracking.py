"""Tests for sapo_vl.tracking: metrics.jsonl, TensorBoard, resume, process gating, progress output."""

import dataclasses
import importlib.machinery
import io
import json
import math
import sys
import types

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sapo_vl.tracking import Progress, Tracker, format_duration


def read_lines(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def log_steps(run_dir, steps, **kwargs):
    with Tracker(run_dir, ["jsonl"], **kwargs) as tracker:
        for s in steps:
            tracker.log({"step": s, "reward/mean": s / 10, "loss": 1.0 / s}, step=s)


# ---------------------------------------------------------------------------------------------------- jsonl
def test_log_writes_one_json_line_per_call_with_the_given_keys(tmp_path):
    with Tracker(tmp_path, ["jsonl"]) as tracker:
        tracker.log({"step": 1, "epoch": 0, "reward/mean": 0.5, "accuracy": 0.25}, step=1)
        tracker.log({"reward/mean": 0.75, "eval/accuracy": 0.5}, step=2)
    lines = read_lines(tmp_path)
    assert len(lines) == 2
    assert set(lines[0]) == {"step", "wall_time", "epoch", "reward/mean", "accuracy"}
    assert lines[0]["step"] == 1 and lines[0]["reward/mean"] == 0.5 and lines[0]["epoch"] == 0
    assert set(lines[1]) == {"step", "wall_time", "reward/mean", "eval/accuracy"}


def test_each_line_is_on_disk_before_close(tmp_path):
    tracker = Tracker(tmp_path, ["jsonl"])
    tracker.log({"loss": 0.1}, step=1)
    assert read_lines(tmp_path)[0]["loss"] == 0.1  # flushed without close(): a crash loses nothing
    tracker.close()


def test_non_finite_values_are_written_as_json_null(tmp_path):
    with Tracker(tmp_path, ["jsonl"]) as tracker:
        tracker.log({"loss": math.nan, "kl": math.inf, "lr": -math.inf, "entropy": 1.5}, step=1)
    text = (tmp_path / "metrics.jsonl").read_text()
    assert "NaN" not in text and "Infinity" not in text
    record = json.loads(text)
    assert record["loss"] is None and record["kl"] is None and record["lr"] is None and record["entropy"] == 1.5


def test_tensor_numpy_and_bool_values_become_python_scalars(tmp_path):
    with Tracker(tmp_path, ["jsonl"]) as tracker:
        tracker.log({"a": torch.tensor(0.5), "b": np.float32(0.25), "c": np.int64(3), "d": True}, step=1)
    record = read_lines(tmp_path)[0]
    assert (record["a"], record["b"], record["c"], record["d"]) == (0.5, 0.25, 3, 1)


def test_non_scalar_metric_raises_naming_the_key(tmp_path):
    with Tracker(tmp_path, ["jsonl"]) as tracker, pytest.raises(ValueError, match="'adv/values'.*shape"):
        tracker.log({"adv/values": torch.zeros(2)}, step=1)


def test_string_metric_raises_naming_the_key(tmp_path):
    with Tracker(tmp_path, ["jsonl"]) as tracker, pytest.raises(ValueError, match="'algo'"):
        tracker.log({"algo": "sapo"}, step=1)


def test_step_key_disagreeing_with_step_argument_raises(tmp_path):
    with Tracker(tmp_path, ["jsonl"]) as tracker, pytest.raises(ValueError, match="disagrees"):
        tracker.log({"step": 3, "loss": 0.1}, step=4)


def test_step_going_backwards_raises(tmp_path):
    with Tracker(tmp_path, ["jsonl"]) as tracker:
        tracker.log({"loss": 0.1}, step=5)
        tracker.log({"eval/accuracy": 0.3}, step=5)  # same step again is fine (eval logged separately)
        with pytest.raises(ValueError, match="backwards"):
            tracker.log({"loss": 0.1}, step=4)


def test_unknown_backend_raises(tmp_path):
    with pytest.raises(ValueError, match="unknown tracking backend.*'tensorbord'"):
        Tracker(tmp_path, ["jsonl", "tensorbord"])


def test_requested_but_missing_backend_raises_import_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` fail whether or not it is installed
    with pytest.raises(ImportError, match="'wandb' was requested.*pip install wandb"):
        Tracker(tmp_path, ["jsonl", "wandb"])


def test_wandb_gets_the_metrics_without_gaps_and_a_resumed_run_continues_the_same_wandb_run(tmp_path, monkeypatch):
    calls = []

    class Run:
        id = "run-1"

        def log(self, values, step):
            calls.append(("log", values, step))

        def finish(self):
            calls.append(("finish",))

    def init(**kwargs):
        calls.append(("init", kwargs))
        return Run()

    wandb = types.ModuleType("wandb")
    wandb.__spec__, wandb.init = importlib.machinery.ModuleSpec("wandb", None), init
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    with Tracker(tmp_path, ["jsonl", "wandb"], run_name="r", config={"a": 1}) as tracker:
        tracker.log({"loss": 0.5, "eval/accuracy": None}, step=1)
    with Tracker(tmp_path, ["wandb"], run_name="r", resume_step=1):
        pass
    first, resumed = [c[1] for c in calls if c[0] == "init"]
    assert first["project"] == "sapo-vl" and first["name"] == "r" and first["config"] == {"a": 1}
    assert first["id"] is None and resumed["id"] == "run-1" and resumed["resume"] == "allow"
    assert ("log", {"loss": 0.5}, 1) in calls and calls.count(("finish",)) == 2


def test_run_json_records_the_config(tmp_path):
    with Tracker(tmp_path, ["jsonl"], project="p", run_name="r", config={"algo": "sapo", "tau_neg": 1.05}):
        pass
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["config"] == {"algo": "sapo", "tau_neg": 1.05}
    assert (info["project"], info["run_name"], info["resumed_from_step"]) == ("p", "r", None)


def test_run_json_records_a_dataclass_config_as_a_dict(tmp_path):
    @dataclasses.dataclass
    class LossConfig:
        name: str = "sapo"
        tau_pos: float = 1.0

    with Tracker(tmp_path, ["jsonl"], config=LossConfig()):
        pass
    assert json.loads((tmp_path / "run.json").read_text())["config"] == {"name": "sapo", "tau_pos": 1.0}


# --------------------------------------------------------------------------------------------------- resume
def test_resume_drops_lines_after_the_resume_step(tmp_path):
    log_steps(tmp_path, range(1, 9))
    log_steps(tmp_path, [6, 7], resume_step=5)
    assert [r["step"] for r in read_lines(tmp_path)] == [1, 2, 3, 4, 5, 6, 7]


def test_resume_drops_a_half_written_last_line(tmp_path):
    log_steps(tmp_path, range(1, 4))
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 4, "loss": 0.')  # the process died mid-write
    log_steps(tmp_path, [4], resume_step=3)
    assert [r["step"] for r in read_lines(tmp_path)] == [1, 2, 3, 4]


def test_resume_rejects_a_corrupt_line_in_the_middle(tmp_path):
    log_steps(tmp_path, range(1, 3))
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    (tmp_path / "metrics.jsonl").write_text(lines[0] + "\nnot json\n" + lines[1] + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: not valid JSON"):
        Tracker(tmp_path, ["jsonl"], resume_step=2)


def test_fresh_run_keeps_an_existing_metrics_file_as_backup(tmp_path):
    log_steps(tmp_path, range(1, 4))
    log_steps(tmp_path, [1])
    assert [r["step"] for r in read_lines(tmp_path)] == [1]
    backup = [json.loads(x) for x in (tmp_path / "metrics.jsonl.bak").read_text().splitlines()]
    assert [r["step"] for r in backup] == [1, 2, 3]


# ---------------------------------------------------------------------------------------------- tensorboard
def tb_scalars(run_dir, tag):
    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_tensorboard_scalars_can_be_read_back(tmp_path):
    with Tracker(tmp_path, ["tensorboard"]) as tracker:
        for s in (1, 2, 3):
            tracker.log({"step": s, "reward/mean": 0.25 * s, "loss": None}, step=s)
    assert tb_scalars(tmp_path, "reward/mean") == [(1, 0.25), (2, 0.5), (3, 0.75)]
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert "step" not in acc.Tags()["scalars"] and "loss" not in acc.Tags()["scalars"]  # None is not logged


def test_tensorboard_resume_purges_steps_after_the_resume_step(tmp_path):
    with Tracker(tmp_path, ["tensorboard"]) as tracker:
        for s in range(1, 6):
            tracker.log({"reward/mean": float(s)}, step=s)
    with Tracker(tmp_path, ["tensorboard"], resume_step=3) as tracker:
        tracker.log({"reward/mean": 50.0}, step=5)  # step 4 of the first attempt must be gone as well
    assert tb_scalars(tmp_path, "reward/mean") == [(1, 1.0), (2, 2.0), (3, 3.0), (5, 50.0)]


# ------------------------------------------------------------------------------------------------ processes
def test_non_main_process_writes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    with Tracker(run_dir, ["jsonl", "tensorboard"], config={"a": 1}, is_main_process=False) as tracker:
        tracker.log({"loss": 0.1}, step=1)
    assert not run_dir.exists()


def test_non_main_process_does_not_touch_an_existing_metrics_file(tmp_path):
    log_steps(tmp_path, range(1, 4))
    before = (tmp_path / "metrics.jsonl").read_text()
    Tracker(tmp_path, ["jsonl"], is_main_process=False, resume_step=1).close()
    assert (tmp_path / "metrics.jsonl").read_text() == before


# ------------------------------------------------------------------------------------------------- progress
METRICS = {"reward/mean": 0.4125, "accuracy": 0.375, "loss": 0.01234, "time/step": 1.21}


def test_progress_without_a_tty_prints_every_n_steps_and_the_last(tmp_path):
    out = io.StringIO()
    with Progress(10, stream=out, every_steps=4, interval_s=1e9) as progress:
        for s in range(1, 11):
            progress.update(s, METRICS)
    lines = out.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == ["step 1/10", "step 4/10", "step 8/10", "step 10/10"]
    assert "reward 0.412" in lines[-1] and "acc 0.375" in lines[-1] and "loss 0.0123" in lines[-1]
    assert "1.21 s/step" in lines[-1] and "eta" in lines[-1] and "elapsed" in lines[-1]


def test_progress_without_a_tty_prints_when_the_interval_has_passed(tmp_path):
    out = io.StringIO()
    progress = Progress(5, stream=out, interval_s=0.0)
    for s in range(1, 4):
        progress.update(s, METRICS)
    assert len(out.getvalue().splitlines()) == 3


def test_progress_close_prints_the_final_state_once(tmp_path):
    out = io.StringIO()
    progress = Progress(100, start_step=10, stream=out, interval_s=1e9)
    for s in range(11, 15):
        progress.update(s, METRICS)
    progress.close()
    progress.close()
    lines = out.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == ["step 11/100", "step 14/100"]


def test_disabled_progress_prints_nothing():
    out = io.StringIO()
    with Progress(10, stream=out, enabled=False, interval_s=0.0) as progress:
        progress.update(1, METRICS)
        progress.print("hello")
    assert out.getvalue() == ""


def test_progress_on_a_tty_draws_a_rich_bar_with_the_reward():
    out = io.StringIO()
    with Progress(10, stream=out, tty=True) as progress:
        progress.update(3, METRICS)
        progress.print("a message")
    text = out.getvalue()
    assert "3/10" in text and "reward 0.412" in text and "a message" in text


def test_progress_rejects_a_start_step_beyond_the_total():
    with pytest.raises(ValueError, match="start_step"):
        Progress(10, start_step=11, enabled=False)


def test_format_duration():
    assert format_duration(3725.2) == "1:02:05"
    assert format_duration(math.inf) == "?"
