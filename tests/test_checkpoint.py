"""Checkpoints: DCP shards of weights and AdamW state, atomic step directories, pruning, resume resolution, loading a
checkpoint as a model and exporting it as a Hugging Face one, RNG round trip."""

import random

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from sapo_vl.checkpoint import (
    checkpoint_dir,
    latest_checkpoint,
    list_checkpoints,
    load_trainer_state,
    resolve_resume,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from sapo_vl.errors import UserError
from sapo_vl.models.load import load_policy


@pytest.fixture(scope="module")
def policy(tiny_dir):
    return load_policy(tiny_dir)


def _save(run_dir, step, policy, keep_last=2, state=None, optimizer=None):
    model, processor = policy
    return save_checkpoint(run_dir, step, policy=model, optimizer=optimizer, processor=processor,
                           trainer_state=state or {"sampler": {"epoch": 0, "pos": step}}, keep_last=keep_last)


def _steps(run_dir):
    return [p.name for p in list_checkpoints(run_dir)]


def test_checkpoint_holds_shards_config_processor_and_trainer_state(tmp_path, policy):
    path = _save(tmp_path, 3, policy, state={"sampler": {"epoch": 1, "pos": 7}, "scheduler": {"lr": 0.1}})
    assert path == checkpoint_dir(tmp_path) / "step-000003"
    assert {"config.json", "state", "tokenizer.json", "trainer_state.pt"} <= {p.name for p in path.iterdir()}
    assert (path / "state" / ".metadata").is_file() and not list(path.glob("*.safetensors"))
    state = load_trainer_state(path)
    assert state["step"] == 3 and state["sampler"] == {"epoch": 1, "pos": 7} and state["scheduler"] == {"lr": 0.1}
    assert set(state["rng"]) >= {"python", "numpy", "torch"}


def _moved(tiny_dir):
    model, processor = load_policy(tiny_dir)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))  # not the initial weights any more
    return model, processor


def test_a_checkpoint_loads_as_the_model_it_saved(tmp_path, tiny_dir):
    model, processor = _moved(tiny_dir)
    path = save_checkpoint(tmp_path, 1, policy=model, optimizer=None, processor=processor, trainer_state={})
    again, again_processor = load_policy(path)  # what sapo-vl eval --model RUN/checkpoints/latest does
    reference, loaded = model.state_dict(), again.state_dict()
    assert loaded.keys() == reference.keys()
    for name, value in reference.items():
        assert torch.equal(loaded[name], value), name
    assert again_processor.tokenizer.get_vocab() == processor.tokenizer.get_vocab()


def test_the_export_of_a_checkpoint_is_what_save_pretrained_writes(tmp_path, tiny_dir):
    from safetensors.torch import load_file

    from sapo_vl.export import export_checkpoint

    model, processor = _moved(tiny_dir)
    path = save_checkpoint(tmp_path, 1, policy=model, optimizer=None, processor=processor, trainer_state={})
    out = export_checkpoint(path, tmp_path / "hf", max_shard_bytes=200_000)  # several files
    model.save_pretrained(tmp_path / "reference")
    reference = load_file(tmp_path / "reference" / "model.safetensors")
    files = sorted(out.glob("model-*.safetensors"))
    exported = {k: v for f in files for k, v in load_file(f).items()}
    assert len(files) > 1 and exported.keys() == reference.keys()
    for name, value in reference.items():
        assert torch.equal(exported[name], value), name
    again = AutoModelForImageTextToText.from_pretrained(str(out))
    assert all(torch.equal(again.state_dict()[k], v) for k, v in model.state_dict().items())
    assert AutoProcessor.from_pretrained(str(out)).tokenizer.get_vocab() == processor.tokenizer.get_vocab()


def test_sapo_vl_export_takes_a_run_directory_and_exports_its_latest_checkpoint(tmp_path, tiny_dir, capsys):
    from sapo_vl.cli import main

    model, processor = _moved(tiny_dir)
    for step in (1, 2):
        save_checkpoint(tmp_path / "run", step, policy=model, optimizer=None, processor=processor, trainer_state={})
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "hf")]) == 0
    assert "step-000002 ->" in capsys.readouterr().out
    again = AutoModelForImageTextToText.from_pretrained(str(tmp_path / "hf"))
    assert all(torch.equal(again.state_dict()[k], v) for k, v in model.state_dict().items())
    assert main(["export", str(tmp_path / "nothing"), str(tmp_path / "hf2")]) == 2
    assert "neither a sapo_vl checkpoint" in capsys.readouterr().err


def test_the_export_casts_to_the_dtype_asked_for(tmp_path, tiny_dir):
    from sapo_vl.export import export_checkpoint

    model, processor = _moved(tiny_dir)
    path = save_checkpoint(tmp_path, 1, policy=model, optimizer=None, processor=processor, trainer_state={})
    out = export_checkpoint(path, tmp_path / "bf16", dtype="bfloat16")
    again = AutoModelForImageTextToText.from_pretrained(str(out), dtype="auto")
    assert {p.dtype for p in again.parameters()} == {torch.bfloat16}
    for name, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[name], value.to(torch.bfloat16)), name


def test_adamw_state_round_trips_through_the_checkpoint(tmp_path, tiny_dir):
    from sapo_vl.checkpoint import load_checkpoint

    model, processor = load_policy(tiny_dir)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    optimizer.step()
    path = save_checkpoint(tmp_path, 1, policy=model, optimizer=optimizer, processor=processor, trainer_state={})
    fresh, _ = load_policy(tiny_dir)
    again = torch.optim.AdamW(fresh.parameters(), lr=5.0)
    load_checkpoint(path, fresh, again)
    assert again.param_groups[0]["lr"] == 1e-3
    for p, q in zip(model.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(p, q)
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(optimizer.state[p][key], again.state[q][key]), key


def test_an_older_whole_weights_checkpoint_is_named_as_such_not_skipped(tmp_path, tiny_dir):
    old = checkpoint_dir(tmp_path) / "step-000001"
    old.mkdir(parents=True)
    torch.save({"step": 1, "optimizer": {}}, old / "trainer_state.pt")
    with pytest.raises(UserError, match="older sapo_vl .* model.path="):
        load_trainer_state(old)
    with pytest.raises(UserError, match="older sapo_vl"):  # resume=auto does not start again from scratch
        resolve_resume("auto", tmp_path)


def test_stale_temporary_directory_is_replaced(tmp_path, policy):
    stale = checkpoint_dir(tmp_path) / ".tmp-step-000005"
    stale.mkdir(parents=True)
    (stale / "garbage.bin").write_bytes(b"half-written")
    path = _save(tmp_path, 5, policy)
    assert not stale.exists() and not (path / "garbage.bin").exists()
    assert _steps(tmp_path) == ["step-000005"]


def test_a_crash_while_writing_leaves_no_step_directory(tmp_path, policy, monkeypatch):
    _save(tmp_path, 1, policy)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(Exception, match="disk full"):  # as raised, or wrapped by torch.distributed.checkpoint
        _save(tmp_path, 2, policy)
    assert _steps(tmp_path) == ["step-000001"]
    assert latest_checkpoint(tmp_path).name == "step-000001"


def test_rewriting_a_step_replaces_it(tmp_path, policy):
    _save(tmp_path, 4, policy, state={"sampler": {"pos": 1}})
    _save(tmp_path, 4, policy, state={"sampler": {"pos": 2}})
    assert _steps(tmp_path) == ["step-000004"]
    assert load_trainer_state(latest_checkpoint(tmp_path))["sampler"] == {"pos": 2}
    assert sorted(p.name for p in checkpoint_dir(tmp_path).iterdir()) == ["latest", "step-000004"]


def test_only_the_newest_keep_last_checkpoints_are_kept(tmp_path, policy):
    for step in (1, 2, 3, 10):
        _save(tmp_path, step, policy, keep_last=2)
    assert _steps(tmp_path) == ["step-000003", "step-000010"]  # numeric order, not lexical


def test_latest_points_at_the_checkpoint_written_last_and_loads(tmp_path, policy):
    for step in (1, 2):
        _save(tmp_path, step, policy, keep_last=1)
    latest = checkpoint_dir(tmp_path) / "latest"
    assert latest.is_symlink() and latest.readlink().name == "step-000002" and latest.resolve().is_dir()
    assert type(load_policy(latest)[0]).__name__.startswith("Qwen3VL")
    assert _steps(tmp_path) == ["step-000002"]


def test_keep_last_zero_keeps_everything(tmp_path, policy):
    for step in (1, 2, 3):
        _save(tmp_path, step, policy, keep_last=0)
    assert _steps(tmp_path) == ["step-000001", "step-000002", "step-000003"]


def test_pruning_never_deletes_the_checkpoint_just_written(tmp_path, policy):
    for step in (50, 100):
        _save(tmp_path, step, policy, keep_last=2)
    path = _save(tmp_path, 2, policy, keep_last=2)  # a restarted run writing into the same directory
    assert path.is_dir() and "step-000002" in _steps(tmp_path)


def test_latest_checkpoint_ignores_incomplete_and_foreign_directories(tmp_path, policy):
    assert latest_checkpoint(tmp_path) is None
    _save(tmp_path, 9, policy, keep_last=0)
    (checkpoint_dir(tmp_path) / "step-000012").mkdir()  # no trainer_state.pt
    (checkpoint_dir(tmp_path) / "step-000015").mkdir()
    torch.save({}, checkpoint_dir(tmp_path) / "step-000015" / "trainer_state.pt")  # no shards
    (checkpoint_dir(tmp_path) / "step-best").mkdir()
    (checkpoint_dir(tmp_path) / ".tmp-step-000020").mkdir()
    assert latest_checkpoint(tmp_path).name == "step-000009"


def test_resolve_resume(tmp_path, policy):
    assert resolve_resume("auto", tmp_path) is None  # nothing to resume: a fresh run
    first = _save(tmp_path, 1, policy, keep_last=0)
    second = _save(tmp_path, 2, policy, keep_last=0)
    assert resolve_resume("auto", tmp_path) == second
    assert resolve_resume("never", tmp_path) is None
    assert resolve_resume(str(first), tmp_path) == first
    assert resolve_resume("force", tmp_path) == second
    with pytest.raises(UserError, match="no sapo_vl checkpoint there"):
        resolve_resume(str(tmp_path / "checkpoints" / "step-000007"), tmp_path)
    with pytest.raises(FileNotFoundError, match="not a sapo_vl checkpoint"):
        load_trainer_state(tmp_path)


def test_rng_state_round_trip_restores_every_generator():
    state = rng_state()
    expected = (random.random(), np.random.rand(3).tolist(), torch.rand(3), torch.randperm(10))
    random.random(), np.random.rand(5), torch.rand(7)  # move on
    set_rng_state(state)
    again = (random.random(), np.random.rand(3).tolist(), torch.rand(3), torch.randperm(10))
    assert again[:2] == expected[:2]
    assert torch.equal(again[2], expected[2]) and torch.equal(again[3], expected[3])


def test_rng_state_survives_the_checkpoint_file(tmp_path, policy):
    torch.manual_seed(11)
    path = _save(tmp_path, 1, policy)
    expected = torch.rand(4)
    torch.manual_seed(999)
    set_rng_state(load_trainer_state(path)["rng"])
    assert torch.equal(torch.rand(4), expected)
