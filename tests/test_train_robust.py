"""Training that loses nothing and never hangs: reward timeouts, signals in every phase, resume guards, early and
clear errors (issue 8's cases, on the tiny model)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from sapo_vl.checkpoint import latest_checkpoint, list_checkpoints
from sapo_vl.cli import main
from sapo_vl.config import load_config
from sapo_vl.errors import ConfigError, UserError
from sapo_vl.rewards import REWARDS
from sapo_vl.train import _accuracy, run

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "recipes" / "tiny" / "demo.yaml"
TINY = ["log.plot=false", "log.progress=false", "log.eval_limit=2", "rollout.group_size=2",
        "rollout.prompts_per_step=2", "rollout.max_new_tokens=3", "warmup.steps=0", "data.kwargs.n=16",
        "reward.num_workers=2", "train.num_mini_batches=1"]
HANG = '''import threading, time
from sapo_vl.rewards import register_reward
calls = []


@register_reward("hang_later")
def hang_later(completions, **kw):
    """Scores the held-out eval and the first step, then never returns (a stuck sandbox, a dead server)."""
    calls.append(1)
    if len(calls) > 2:
        threading.Event().wait()
    return [0.5] * len(completions)
'''


def _config(out, tiny_dir, *overrides):
    return load_config(DEMO, [*TINY, f"output_dir={out}", f"model.path={tiny_dir}", *overrides])


def _rows(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def stuck_reward(monkeypatch):
    """A reward that never returns on a training batch (more than the 2 held-out samples); released at the end."""
    release = threading.Event()

    def stuck(completions, **kw):
        if len(completions) > 2:
            release.wait()
        return [1.0] * len(completions)

    monkeypatch.setitem(REWARDS, "stuck", stuck)
    yield "reward.funcs={stuck: 1.0}"
    release.set()


@pytest.mark.parametrize("on_timeout", ["zero", "skip"])
def test_a_hanging_reward_times_out_and_training_goes_on(tmp_path, tiny_dir, stuck_reward, on_timeout):
    cfg = _config(tmp_path / "run", tiny_dir, stuck_reward, "reward.timeout_s=1", f"reward.on_timeout={on_timeout}",
                  "train.total_steps=2", "rollout.prompts_per_step=4")
    start = time.monotonic()
    summary = run(cfg)
    assert summary["step"] == 2 and time.monotonic() - start < 120
    train = [r for r in _rows(tmp_path / "run") if "reward/timeouts" in r]
    assert [r["reward/timeouts"] for r in train] == [8.0, 8.0]  # every training sample: one stuck chunk
    # zero: the samples score 0 and are trained on; skip: their groups leave the update (no optimizer step)
    assert [r["optimizer_steps"] for r in train] == ([1.0, 1.0] if on_timeout == "zero" else [0.0, 0.0])


def _spawn(args, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    log = open(tmp_path / "train.log", "w")  # noqa: SIM115 (closed by _finish)
    proc = subprocess.Popen([sys.executable, "-m", "sapo_vl.cli", "train", str(DEMO), *args], cwd=tmp_path, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    return proc, log


def _wait_for(predicate, proc, timeout_s=240):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def _finish(proc, log, tmp_path, timeout_s=30):
    try:
        rc = proc.wait(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    return rc, (tmp_path / "train.log").read_text()


@pytest.mark.timeout(300)
def test_sigterm_while_a_reward_hangs_saves_the_last_step_within_seconds(tmp_path, tiny_dir):
    (tmp_path / "hang_plugin.py").write_text(HANG)
    out = tmp_path / "run"
    proc, log = _spawn([*TINY, f"output_dir={out}", f"model.path={tiny_dir}", "train.total_steps=50",
                        "reward.funcs={hang_later: 1.0}", "reward.timeout_s=0", "--import", "hang_plugin.py"], tmp_path)
    metrics = out / "metrics.jsonl"
    try:
        assert _wait_for(lambda: metrics.is_file() and '"loss"' in metrics.read_text(), proc), \
            (tmp_path / "train.log").read_text()[-2000:]
        time.sleep(1.0)  # step 2 is now waiting on the stuck reward
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
    finally:
        rc, output = _finish(proc, log, tmp_path)
    assert rc == 0 and time.monotonic() - sent < 20, output[-2000:]  # the stuck thread does not hold the exit
    assert "SIGTERM during step 2: that step is dropped, step 1 is saved" in output
    assert [p.name for p in list_checkpoints(out)] == ["step-000001"]


@pytest.mark.timeout(300)
def test_sigterm_during_the_warm_up_exits_zero_promptly_with_nothing_saved(tmp_path, tiny_dir):
    out = tmp_path / "run"
    proc, log = _spawn([*TINY, f"output_dir={out}", f"model.path={tiny_dir}", "warmup.steps=100000"], tmp_path)
    try:
        assert _wait_for(lambda: "warm-up step 1/" in (tmp_path / "train.log").read_text(), proc)
        proc.send_signal(signal.SIGTERM)
    finally:
        rc, output = _finish(proc, log, tmp_path)
    assert rc == 0 and "stopped before training started, nothing saved" in output
    assert latest_checkpoint(out) is None


@pytest.mark.timeout(300)
def test_a_second_training_run_on_the_same_output_dir_is_refused_while_the_first_goes_on(tmp_path, tiny_dir):
    out = tmp_path / "run"
    first, log = _spawn([*TINY, f"output_dir={out}", f"model.path={tiny_dir}", "train.total_steps=100000"], tmp_path)
    try:
        metrics = out / "metrics.jsonl"
        assert _wait_for(lambda: metrics.is_file() and '"loss"' in metrics.read_text(), first)
        second = subprocess.run([sys.executable, "-m", "sapo_vl.cli", "train", str(DEMO), *TINY, f"output_dir={out}",
                                 f"model.path={tiny_dir}"], capture_output=True, text=True, timeout=120,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert second.returncode == 2 and f"is in use by PID {first.pid}" in second.stderr
        assert first.poll() is None  # the first run is untouched
    finally:
        first.send_signal(signal.SIGTERM)
        rc, _ = _finish(first, log, tmp_path, timeout_s=60)
    assert rc == 0 and latest_checkpoint(out) is not None


def test_resume_refuses_another_experiment_and_names_the_changes(tmp_path, tiny_dir):
    out = tmp_path / "run"
    run(_config(out, tiny_dir, "train.total_steps=1", "log.save_every=1"))
    with pytest.raises(ConfigError, match=r"different experiment \(algo.loss_hparams: .* -> \{'eps_low': 0.2, .*; "
                                          r"algo.policy_loss: 'sapo' -> 'grpo'\).*resume=force"):
        run(_config(out, tiny_dir, "train.total_steps=2", "algo.policy_loss=grpo", "algo.loss_hparams={}"))
    with pytest.raises(UserError, match="did model.freeze_vision change"):
        run(_config(out, tiny_dir, "train.total_steps=2", "model.freeze_vision=true", "resume=force"))
    summary = run(_config(out, tiny_dir, "train.total_steps=2", "log.eval_limit=1"))  # safe keys only: resumes
    assert summary["step"] == 2 and "eval_before" not in summary


def test_a_half_written_tiny_model_from_an_older_kill_is_rebuilt(tmp_path):
    out = tmp_path / "run"
    (out / "tiny_init").mkdir(parents=True)
    (out / "tiny_init" / "config.json").write_text("")  # what an in-place write killed mid-way left
    summary = run(load_config(DEMO, [*TINY, f"output_dir={out}", "train.total_steps=1"]))
    assert summary["step"] == 1 and (out / "tiny_init" / "model.safetensors").is_file()


def test_a_generation_budget_beyond_the_models_context_is_refused_before_loading(tmp_path, tiny_dir, capsys):
    code = main(["train", str(DEMO), *TINY, f"output_dir={tmp_path / 'run'}", f"model.path={tiny_dir}",
                 "data.max_prompt_length=4000", "rollout.max_new_tokens=200"])
    err = capsys.readouterr().err
    assert code == 2 and "= 4200 exceeds the model's context (4096 tokens" in err


def test_a_bad_dataset_option_fails_in_one_line_before_the_tiny_model_is_built(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", str(DEMO), *TINY, f"output_dir={out}", "data.eval_kwargs={path: x.jsonl}"])
    err = capsys.readouterr().err
    assert code == 2 and "synthetic_shapes got unknown option(s) ['path']" in err and len(err.splitlines()) == 1
    assert not (out / "tiny_init").exists()


def test_an_os_error_is_one_line_not_a_traceback(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["train", str(DEMO), f"output_dir={blocker / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sapo-vl train: error: ") and "Traceback" not in err and len(err.splitlines()) == 1


def test_no_held_out_prompts_is_said_not_printed_as_zero_accuracy():
    assert _accuracy({"eval/accuracy": 0.0, "eval/reward": 0.0, "eval/n": 0.0}) == "no held-out prompts"
    assert _accuracy({"eval/accuracy": 0.5, "eval/reward": 0.5, "eval/n": 4.0}) == "0.500 (4 prompts)"


def test_samples_no_reward_applied_to_are_counted(tmp_path, tiny_dir, monkeypatch):
    monkeypatch.setitem(REWARDS, "never", lambda completions, **kw: [None] * len(completions))
    run(_config(tmp_path / "run", tiny_dir, "train.total_steps=1", "reward.funcs={never: 1.0}"))
    (row,) = [r for r in _rows(tmp_path / "run") if "loss" in r]
    assert row["reward/not_applicable_frac"] == 1.0


def test_torch_threads_left_alone(tmp_path):  # the conftest's single thread survives a run's imports
    assert torch.get_num_threads() == 1


def test_a_bad_tiny_model_option_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(DEMO), *TINY, f"output_dir={out}", "model.tiny={hidden_sise: 8}"]) == 2
    err = capsys.readouterr().err
    assert "model.tiny: " in err and "hidden_sise" in err and len(err.splitlines()) == 1
    assert not (out / "tiny_init").exists()
