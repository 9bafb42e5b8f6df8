"""FSDP2 shards for real on CPU: 2 processes over gloo, launched as users launch them (``accelerate launch`` with
recipes/accelerate/fsdp2.yaml), against one process on the same global batch, for the tiny MoE and the tiny dense
model (tied embeddings, as Qwen3-VL-2B / 4B). tests/fsdp_driver.py runs the updates; this file checks what it wrote.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fsdp_driver

REPO = Path(__file__).resolve().parents[1]
MODELS = ("moe", "dense")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """OUT/sharded/<model>/ from the 2-process FSDP2 launch, OUT/single/<model>/ from one process."""
    from sapo_vl.models.tiny import TinyConfig, make_tiny_model

    root = tmp_path_factory.mktemp("fsdp")
    dirs = [str(make_tiny_model(root / "moe", TinyConfig())),
            str(make_tiny_model(root / "dense", TinyConfig(moe=False, tie_word_embeddings=True, num_hidden_layers=6)))]
    fsdp_driver.run(root / "single", dirs)
    cmd = [str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file",
           str(REPO / "recipes/accelerate/fsdp2.yaml"), "--num_processes", "2", "--mixed_precision", "no",
           "--main_process_port", str(_free_port()), str(REPO / "tests/fsdp_driver.py"), "--other",
           str(root / "single"), str(root / "sharded"), *dirs]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-6000:]
    fsdp_driver.cross(root / "single", dirs, root / "sharded")
    return root


def _result(runs, kind, name) -> dict:
    return json.loads((runs / kind / name / "result.json").read_text())


@pytest.mark.parametrize("name", MODELS)
def test_every_parameter_is_a_dtensor_holding_its_ranks_rows(runs, name):
    for rank in (0, 1):
        shards = json.loads((runs / "sharded" / name / f"shards-{rank}.json").read_text())
        assert shards and all(local is not None for _, local in shards.values())
        for full, local in shards.values():  # dim 0 split as torch.chunk does, the other dims whole
            rows = -(-full[0] // 2)
            assert local == [max(0, min(rows, full[0] - rank * rows)), *full[1:]]


@pytest.mark.parametrize("name", MODELS)
def test_the_wrap_units_are_the_models_own_decoder_layers_and_vision_blocks(runs, name):
    from transformers import AutoConfig

    model_cls = {"moe": "Qwen3VLMoe", "dense": "Qwen3VL"}[name]
    layers = AutoConfig.from_pretrained(runs / name).text_config.num_hidden_layers
    units = _result(runs, "sharded", name)["fsdp_units"]
    assert units.count(f"FSDP{model_cls}TextDecoderLayer") == layers
    assert units.count(f"FSDP{model_cls}VisionBlock") == 2 and "FSDPPolicyModule" in units


@pytest.mark.parametrize("name", MODELS)
def test_two_sharded_processes_match_one_process_on_the_same_global_batch(runs, name):
    sharded, single = _result(runs, "sharded", name), _result(runs, "single", name)
    assert (sharded["world"], single["world"]) == (2, 1)
    # shared-prefix forwards for every micro-batch: what sharded ranks run (the same calls on every rank)
    assert sharded["prefix_sharing"] == single["prefix_sharing"] == "always"
    for a, b in zip(sharded["steps"], single["steps"], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)
    assert len({round(s["loss"], 3) for s in single["steps"]}) == 3  # the loss follows the weights step to step


@pytest.mark.parametrize("name", MODELS)
def test_no_rank_gathers_weights_to_load_checkpoint_or_resume_and_at_most_two_units_to_update(runs, name):
    """What makes each rank's memory fall with the number of ranks (benchmarks/bench_memory.py measures it): loading
    fills each rank's shards from its rows of the files, checkpoints write and resume reads each rank's own shards,
    so no parameter is ever gathered there; an update gathers the root and at most two wrap units at a time (the one
    computing and the one prefetched), never the whole model."""
    result = _result(runs, "sharded", name)
    held, sizes = result["held_unsharded"], result["unit_sizes"]
    assert held["load"] == held["checkpoint"] == held["resume"] == 0
    assert 0 < held["update"] <= sizes["root"] + 2 * sizes["largest"] < sizes["total"]


@pytest.mark.parametrize("name", MODELS)
def test_each_rank_writes_its_own_half_of_the_checkpoint(runs, name):
    state = runs / "sharded" / name / "checkpoints" / "step-000002" / "state"
    sizes = sorted(p.stat().st_size for p in state.glob("*.distcp"))
    whole = sum(p.stat().st_size for p in (runs / "single" / name / "checkpoints" / "step-000002" / "state").glob(
        "*.distcp"))
    # weights + AdamW once (each tensor's two halves cost a few hundred bytes of framing more than the whole)
    assert len(sizes) == 2 and whole < sum(sizes) < 1.1 * whole
    assert sizes[1] < 0.6 * whole  # neither rank wrote (or gathered) the other's half (scalars and framing aside)


@pytest.mark.parametrize("name", MODELS)
def test_the_sharded_checkpoint_exports_the_model_one_process_trained(runs, name, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText

    from sapo_vl.export import export_checkpoint

    sharded = export_checkpoint(runs / "sharded" / name / "checkpoints" / "step-000002", tmp_path / "sharded")
    single = export_checkpoint(runs / "single" / name / "checkpoints" / "step-000002", tmp_path / "single")
    model = AutoModelForImageTextToText.from_pretrained(sharded)  # one process, no distributed setup
    reference = {k: v for f in single.glob("*.safetensors") for k, v in load_file(f).items()}
    weights = {k: v for f in sharded.glob("*.safetensors") for k, v in load_file(f).items()}
    assert weights.keys() == reference.keys()
    for key, value in reference.items():
        assert weights[key].shape == value.shape
        # two Adam steps of lr 3e-3: an element whose gradient is near Adam's eps moves by a noticeable share of a
        # step on float32 rounding alone, so a few elements differ by up to ~1e-4; the rest agree to ~1e-7
        torch.testing.assert_close(weights[key], value, rtol=1e-4, atol=1e-4)
        assert (weights[key] - value).abs().mean() < 1e-6
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for p in AutoModelForImageTextToText.from_pretrained(single).parameters())


@pytest.mark.parametrize("name", MODELS)
def test_resuming_from_the_sharded_checkpoint_continues_exactly(runs, name):
    result = _result(runs, "sharded", name)
    assert result["resumed_step3"] == result["steps"][2]  # loss and gradient norm, bit for bit
    assert result["resumed_weights_equal"]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("kind", ["single", "sharded"])
def test_a_checkpoint_resumes_on_another_number_of_processes(runs, name, kind):
    """2 -> 1 (single resumed the sharded launch's step-2 checkpoint) and 1 -> 2: step 3 as the uninterrupted run's,
    within float32 rounding (the checkpoint's shards are re-split for the new number of processes)."""
    result = _result(runs, kind, name)
    cross, uninterrupted = result["cross_resumed_step3"], result["steps"][2]
    assert cross["loss"] == pytest.approx(uninterrupted["loss"], rel=1e-5)
    assert cross["grad_norm"] == pytest.approx(uninterrupted["grad_norm"], rel=1e-5)
    assert result["cross_weights_max_diff"] < 1e-4


def test_gradient_checkpointing_under_fsdp2_matches_one_process(runs):
    """Recomputing each decoder layer in the backward (every real recipe does) while FSDP2 gathers it again: the
    losses and gradient norms of the first two updates equal one process's, with and without checkpointing."""
    sharded = json.loads((runs / "sharded" / "moe" / "checkpointing.json").read_text())["steps"]
    single = json.loads((runs / "single" / "moe" / "checkpointing.json").read_text())["steps"]
    plain = _result(runs, "single", "moe")["steps"][:2]
    for a, b, c in zip(sharded, single, plain, strict=True):
        for key in ("loss", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-5) and b[key] == pytest.approx(c[key], rel=1e-5)


def test_a_rank_without_images_runs_the_vision_collectives_with_the_rank_that_has_them(runs):
    """Rank 0's prompts have images, rank 1's none (a mixture of image and text-only data): generation, the old
    log-prob forward and an update with a trainable vision tower ran on both ranks (gloo would have aborted on
    mispaired all-gathers), and each rank drew and scored exactly what one unsharded process does from its seed,
    although rank 1 finished after one token and kept decoding in step with rank 0."""
    for rank in (0, 1):
        sharded = json.loads((runs / "sharded" / "moe" / f"mixed-{rank}.json").read_text())
        single = json.loads((runs / "single" / "moe" / f"mixed-{rank}.json").read_text())
        assert sharded["tokens"] == single["tokens"]
        assert all(len(t) == (1 if rank else 4) for t in sharded["tokens"])
        for a, b in zip(sharded["old_logprobs"], single["old_logprobs"], strict=True):
            assert a == pytest.approx(b, abs=1e-5)
        assert torch.isfinite(torch.tensor([sharded["loss"], sharded["grad_norm"]])).all()
        if rank == 0:  # the main process holds the gathered weights: rank 0's images trained the shared tower
            assert sharded["vision_moved"] == sharded["vision_tensors"] > 0
        # rank 1 asked to stop mid-generation: both ranks stopped there, and the weights could still be gathered
        assert sharded["stopped"] and sharded["saved_after_stop"]
        # generation gathers each decoder layer once when they fit (here both), at every step otherwise
        gathers = sharded["all_gathers"]
        assert gathers["same_tokens"] and gathers["kept"] == 2
        assert gathers["all"] == 5  # once each: the root, 2 vision blocks, 2 decoder layers
        assert gathers["all"] < gathers["first"] < gathers["none"]  # one layer, then both, gathered again per step
        # routing replay through shared prompts, one rank unable to (padded): both ran the padded forward
        assert sharded["replay_drift"] == 0.0


@pytest.mark.timeout(300)
def test_sapo_vl_train_under_the_fsdp2_config_shards_generates_evaluates_and_saves(tmp_path):
    """The whole loop under FSDP2 on 2 CPU processes, with bf16 compute as on GPUs: sharded generation (synced
    decoding steps), held-out prompts split 3 / 2 over the ranks (padded so both generate as often), full
    checkpoints of the fp32 master weights."""
    from transformers import AutoModelForImageTextToText

    out = tmp_path / "run"
    cmd = [str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file",
           str(REPO / "recipes/accelerate/fsdp2.yaml"), "--num_processes", "2", "--mixed_precision", "no",
           "--main_process_port", str(_free_port()), "-m", "sapo_vl.cli", "train", str(REPO / "recipes/tiny/demo.yaml"),
           f"output_dir={out}", "train.sharding=fsdp2", "train.total_steps=2", "rollout.group_size=4",
           "rollout.prompts_per_step=2", "warmup.steps=0", "train.num_mini_batches=2", "data.eval_kwargs={n: 5}",
           "log.eval_limit=10", "log.plot=false", "log.progress=false", "train.mixed_precision=bf16"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-6000:]
    assert "FSDP2 over 2 processes: 373,536 of 373,536 parameters sharded" in proc.stdout
    assert "float32 weights, compute in bfloat16, gradients reduced in float32" in proc.stdout
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [d["step"] for d in lines if "reward/mean" in d] == [1, 2]
    assert [d["eval/n"] for d in lines if "eval/n" in d] == [5.0, 5.0]  # before and after: every prompt once
    model = AutoModelForImageTextToText.from_pretrained(out / "model", dtype="auto")  # the run's export
    assert sum(p.numel() for p in model.parameters()) == 373_536
    assert {p.dtype for p in model.parameters()} == {torch.float32}


@pytest.mark.timeout(300)
def test_pure_bf16_training_shards_bf16_weights_and_reduces_gradients_in_fp32(tmp_path):
    """model.dtype=bfloat16 under FSDP2: accelerate would upcast the weights to fp32 under bf16 autocast; pure bf16
    keeps them (and AdamW's state) in bf16, computes in bf16 and reduces gradients in fp32; the export is bf16."""
    from transformers import AutoModelForImageTextToText

    out = tmp_path / "run"
    cmd = [str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file",
           str(REPO / "recipes/accelerate/fsdp2.yaml"), "--num_processes", "2", "--mixed_precision", "no",
           "--main_process_port", str(_free_port()), "-m", "sapo_vl.cli", "train", str(REPO / "recipes/tiny/demo.yaml"),
           f"output_dir={out}", "train.total_steps=1", "rollout.group_size=2", "rollout.prompts_per_step=1",
           "warmup.steps=2", "log.eval_limit=1", "log.plot=false", "log.progress=false", "model.dtype=bfloat16"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-6000:]
    assert "bfloat16 weights, compute in bfloat16, gradients reduced in float32" in proc.stdout
    model = AutoModelForImageTextToText.from_pretrained(out / "model", dtype="auto")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


@pytest.mark.timeout(300)
def test_sapo_vl_train_under_fsdp2_on_a_mixture_of_image_and_text_only_prompts(tmp_path):
    """A mixture of an image dataset and a text-only one: steps where one rank draws only text prompts and the
    other images (with this seed, the run crashed on mispaired all-gathers before every rank ran the vision tower)."""
    for split in ("train", "test"):
        (tmp_path / f"{split}.jsonl").write_text("".join(
            json.dumps({"id": f"t{i}", "prompt": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
            for i in range(20)))
    recipe = tmp_path / "mixture.yaml"
    recipe.write_text(f"""
model: {{path: tiny}}
data:
  mixture:
    - {{dataset: synthetic_shapes, kwargs: {{num_colors: 3}}, reward: vqa}}
    - {{dataset: jsonl, kwargs: {{path: "{tmp_path}/{{split}}.jsonl"}}, reward: math}}
rollout: {{group_size: 4, prompts_per_step: 2, max_new_tokens: 4}}
reward: {{funcs: {{auto: 1.0}}}}
train: {{total_steps: 3, num_mini_batches: 1, micro_batch_tokens: 512, mixed_precision: bf16}}
log: {{eval_limit: 4, plot: false, progress: false, save_every: 0}}
""")
    out = tmp_path / "run"
    cmd = [str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file",
           str(REPO / "recipes/accelerate/fsdp2.yaml"), "--num_processes", "2", "--mixed_precision", "no",
           "--main_process_port", str(_free_port()), "-m", "sapo_vl.cli", "train", str(recipe), f"output_dir={out}"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-6000:]
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [d for d in lines if "reward/mean" in d]
    assert [d["step"] for d in steps] == [1, 2, 3]
    assert any("reward/by_source/jsonl" in d for d in steps) and any("reward/by_source/synthetic_shapes" in d
                                                                     for d in steps)


def test_a_recipe_sized_for_fsdp2_refuses_to_run_unsharded(tmp_path, capsys):
    from sapo_vl.cli import main

    code = main(["train", str(REPO / "recipes/tiny/demo.yaml"), f"output_dir={tmp_path / 'run'}",
                 "train.sharding=fsdp2"])
    err = capsys.readouterr().err
    assert code == 2 and "train.sharding=fsdp2" in err and "recipes/accelerate/fsdp2.yaml" in err
    assert not (tmp_path / "run" / "tiny_init").exists()  # refused before any model is built


@pytest.mark.parametrize("kind, required, fsdp_asked, message", [
    ("single", "any", True, "has 1 process"),
    ("ddp", "fsdp2", False, "but the run is ddp"),
    ("fsdp1", "any", True, "FSDP version 1 is not supported"),
])
def test_a_run_asked_to_shard_that_would_not_is_refused(kind, required, fsdp_asked, message):
    from sapo_vl.errors import UserError
    from sapo_vl.parallel import check_sharding

    with pytest.raises(UserError, match=message):
        check_sharding(kind, required, fsdp_asked=fsdp_asked, processes=1 if kind == "single" else 2)
    check_sharding("fsdp2", required, fsdp_asked=fsdp_asked, processes=2)  # what it asked for: fine


def test_deepspeed_is_refused_with_the_fsdp2_launch_to_use_instead(monkeypatch):
    from sapo_vl.config import TrainConfig
    from sapo_vl.errors import UserError
    from sapo_vl.parallel import make_accelerator

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(UserError, match="DeepSpeed is not supported.*recipes/accelerate/fsdp2.yaml"):
        make_accelerator(TrainConfig())
