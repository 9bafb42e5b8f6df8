"""Run directories: one run at a time, whole-or-absent directories, a full disk named as such, clean stops."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sapo_vl.errors import Interrupted, UserError
from sapo_vl.rundir import RunLock, StopFlag, atomic_dir

ROOT = Path(__file__).resolve().parents[1]
HOLD = ("import sys, time; from sapo_vl.rundir import RunLock\n"
        "with RunLock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(600)\n")


def _holder(directory: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_holder_is_refused_naming_the_first_and_a_killed_one_never_blocks(tmp_path):
    proc = _holder(tmp_path)
    try:
        with pytest.raises(UserError, match=rf"{tmp_path} is in use by PID {proc.pid} on .*, started "):
            with RunLock(tmp_path):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with RunLock(tmp_path):  # the lock died with its process: the stale file does not block
        assert (tmp_path / ".lock").read_text().startswith(f'{{"pid": {os.getpid()}')


def test_a_training_run_on_a_held_directory_exits_2_before_writing(tmp_path, capsys):
    from sapo_vl.cli import main

    proc = _holder(tmp_path)
    try:
        code = main(["train", str(ROOT / "recipes/tiny/demo.yaml"), f"output_dir={tmp_path}"])
    finally:
        proc.kill()
        proc.wait()
    assert code == 2 and f"is in use by PID {proc.pid}" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]  # no config.yaml, no tiny_init


def test_atomic_dir_keeps_the_old_directory_until_the_new_one_is_whole(tmp_path):
    final = tmp_path / "model"
    with atomic_dir(final) as tmp:
        (tmp / "config.json").write_text("1")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_dir(final) as tmp:
            (tmp / "config.json").write_text("")  # the 0-byte config a kill used to leave behind
            raise RuntimeError("killed mid-write")
    assert (final / "config.json").read_text() == "1" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_full_disk_is_named_and_the_partial_write_removed(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 2**20, 2**20))
    with pytest.raises(UserError, match=r"no space left on device writing .*ckpt \(needed ~\d+ MB, 1 MB free"):
        with atomic_dir(tmp_path / "ckpt", needed_bytes=300 * 2**20) as tmp:
            (tmp / "part").write_bytes(b"x" * 1000)
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0")
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, tiny_dir, monkeypatch):
    import shutil
    from collections import namedtuple

    from sapo_vl.checkpoint import latest_checkpoint, list_checkpoints, save_checkpoint
    from sapo_vl.models.load import load_policy

    model, processor = load_policy(tiny_dir)
    save_checkpoint(tmp_path, 1, policy=model, optimizer=None, processor=processor, trainer_state={})

    def full(obj, f, *args, **kwargs):
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: namedtuple("u", "total used free")(1, 1, 0))
    with pytest.raises(UserError, match="no space left on device writing .*step-000002"):
        save_checkpoint(tmp_path, 2, policy=model, optimizer=None, processor=processor, trainer_state={})
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000001"]
    assert latest_checkpoint(tmp_path).name == "step-000001"
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_the_first_signal_asks_to_stop_and_the_second_exits_at_once(monkeypatch):
    exits = []
    monkeypatch.setattr(os, "_exit", exits.append)
    stop = StopFlag()
    assert not stop()
    stop.check("nothing")  # no stop requested: no effect
    stop._handle(signal.SIGTERM, None)
    assert stop() and stop.signal == "SIGTERM" and exits == []
    with pytest.raises(Interrupted, match="stop requested during the warm-up"):
        stop.check("the warm-up")
    stop._handle(signal.SIGINT, None)
    assert exits == [128 + signal.SIGINT]


def test_a_stop_ends_generation_within_a_decoding_step(tiny_dir):
    from sapo_vl.data import build_synthetic_shapes
    from sapo_vl.models.load import load_policy
    from sapo_vl.rollout import HFEngine, PromptFormat, SamplingParams, collate_prompts

    model, processor = load_policy(tiny_dir)
    calls = []

    def stop():  # asked for after three decoding steps
        calls.append(1)
        return len(calls) > 3

    engine = HFEngine(model, processor, stop=stop)
    prompts = collate_prompts(PromptFormat(processor), build_synthetic_shapes("test", n=2))
    start = time.monotonic()
    with pytest.raises(Interrupted, match="during generation"):
        engine.generate(prompts, SamplingParams(max_new_tokens=5000, temperature=1.0))
    assert len(calls) <= 6 and time.monotonic() - start < 30


WRITER = ("import sys, time; from sapo_vl.rundir import atomic_dir\n"
          "with atomic_dir(sys.argv[1]) as tmp:\n"
          "    (tmp / 'config.json').write_text('')\n"
          "    print('writing', flush=True)\n"
          "    time.sleep(600)\n"
          "    (tmp / 'config.json').write_text('new')\n")


def test_a_kill_during_a_directory_write_leaves_the_old_one_and_the_next_write_cleans_up(tmp_path):
    final = tmp_path / "tiny_init"
    with atomic_dir(final) as tmp:
        (tmp / "config.json").write_text("old")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(final)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (final / "config.json").read_text() == "old"  # whole, the previous content
    with atomic_dir(final) as tmp:  # the next writer removes what the killed one left
        (tmp / "config.json").write_text("newer")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny_init"]
    assert (final / "config.json").read_text() == "newer"
