"""The same `sapo-vl train` entry point under `accelerate launch` with 2 CPU processes (torch.distributed, gloo)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(600)
def test_two_process_accelerate_run_trains_and_checkpoints(tmp_path):
    out = tmp_path / "run"
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--config_file", str(REPO / "recipes/accelerate/cpu_2proc.yaml"),
           "--main_process_port", str(_free_port()), "-m", "sapo_vl.cli", "train", str(REPO / "recipes/tiny/demo.yaml"),
           f"output_dir={out}", "train.total_steps=2", "rollout.group_size=4", "rollout.prompts_per_step=2",
           "warmup.steps=2", "train.num_mini_batches=2", "log.eval_limit=4", "log.plot=false", "log.progress=false",
           "log.save_every=0", "algo.filter_zero_variance=true"]  # ranks filter different counts: steps stay in step
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-8000:]
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [d for d in lines if "reward/mean" in d]
    assert [d["step"] for d in steps] == [1, 2]
    assert all(d["optimizer_steps"] == 2.0 for d in steps)
    evals = [d for d in lines if "eval/n" in d]
    assert evals and evals[-1]["eval/n"] == 8.0  # 4 held-out prompts on each of the 2 ranks, reduced
    assert (out / "checkpoints" / "step-000002" / "state" / ".metadata").is_file()
    assert (out / "model" / "model.safetensors.index.json").is_file()  # the final policy, exported
    assert "resumed" not in proc.stdout


@pytest.mark.timeout(300)
def test_ddp_ranks_with_and_without_images_train_together(tmp_path):
    """Data parallel, rank 0's prompts with images and rank 1's text only: both ranks reduce the vision tower's
    gradients (rank 1's from a blank image, zero), and each draws and scores what one process does from its seed."""
    import torch

    sys.path.insert(0, str(REPO / "tests"))
    import fsdp_driver
    from sapo_vl.models.tiny import TinyConfig, make_tiny_model

    model = make_tiny_model(tmp_path / "moe", TinyConfig())
    (tmp_path / "ddp").mkdir()
    (tmp_path / "single").mkdir()
    cmd = [str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file",
           str(REPO / "recipes/accelerate/cpu_2proc.yaml"), "--main_process_port", str(_free_port()),
           str(REPO / "tests/fsdp_driver.py"), "--mixed", str(tmp_path / "ddp"), str(model)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-6000:]
    fsdp_driver.drive_mixed(Path(model), tmp_path / "single")
    for rank in (0, 1):
        ddp = json.loads((tmp_path / "ddp" / f"mixed-{rank}.json").read_text())
        single = json.loads((tmp_path / "single" / f"mixed-{rank}.json").read_text())
        assert ddp["tokens"] == single["tokens"]
        for a, b in zip(ddp["old_logprobs"], single["old_logprobs"], strict=True):
            assert a == pytest.approx(b, abs=1e-5)
        assert torch.isfinite(torch.tensor([ddp["loss"], ddp["grad_norm"]])).all()
        if rank == 0:
            assert ddp["vision_moved"] == ddp["vision_tensors"] > 0
        assert ddp["stopped"] == (rank == 1) and ddp["saved_after_stop"]  # unsharded generation: no lockstep


def _reduce_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch
    import torch.distributed as dist

    from sapo_vl.parallel import reduce_mean

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)

    class _Acc:  # the two attributes and the method reduce_mean uses, backed by the real process group
        num_processes, device = world, torch.device("cpu")

        @staticmethod
        def reduce(t, reduction):
            dist.all_reduce(t)
            return t

    values = {"a": 1.0, "sapo/gate_mean_neg": 0.5} if rank == 0 else {"a": 3.0, "moe/x": 7.0}
    result = reduce_mean(values, _Acc())
    if rank == 0:
        Path(out).write_text(json.dumps(result))
    dist.destroy_process_group()


def test_metrics_are_averaged_over_the_ranks_that_report_them(tmp_path):
    import torch.multiprocessing as mp

    out = tmp_path / "reduced.json"
    mp.spawn(_reduce_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    assert json.loads(out.read_text()) == {"a": 2.0, "moe/x": 7.0, "sapo/gate_mean_neg": 0.5}
