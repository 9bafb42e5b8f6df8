"""Checkpoints: the policy in Hugging Face format plus everything needed to continue bit-identically.

    RUN_DIR/checkpoints/step-000040/
        config.json, model.safetensors, generation_config.json   (from_pretrained-loadable policy)
        processor / tokenizer files                                (AutoProcessor-loadable)
        trainer_state.pt                                           (optimizer, scheduler, RNG, data position, step)
    RUN_DIR/checkpoints/latest -> step-000040                      (the checkpoint written last)

A checkpoint is written to a temporary directory and renamed into place, so a crash never leaves a half-written
``step-*`` directory (a full disk is reported as such, and the partial temp removed); only the newest ``keep_last``
are kept.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from sapo_vl.errors import UserError
from sapo_vl.rundir import atomic_dir

_STEP_DIR = re.compile(r"^step-(\d+)$")


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.random.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.random.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    ckpts = [p for p in list_checkpoints(run_dir) if (p / "trainer_state.pt").is_file()]
    return ckpts[-1] if ckpts else None


def save_checkpoint(run_dir: str | Path, step: int, *, model, processor, trainer_state: dict,
                    keep_last: int = 2, state_dict: dict | None = None) -> Path:
    """Atomically write ``step-{step}`` (``rundir.atomic_dir``: a full disk is a clear error and leaves the
    previous checkpoints intact); point ``latest`` at it; prune to the newest ``keep_last``. Main process only.
    ``state_dict``: the model's full weights when its own are shards (``parallel.full_model_state``)."""
    root = checkpoint_dir(run_dir)
    final = root / f"step-{step:06d}"
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    with atomic_dir(final, needed_bytes=3 * weights) as tmp:  # weights + Adam's two moments
        model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
        processor.save_pretrained(tmp)
        torch.save({"rng": rng_state(), **trainer_state, "step": step}, tmp / "trainer_state.pt")  # caller may pass rng
    link = root / ".latest.tmp"
    link.unlink(missing_ok=True)
    os.symlink(final.name, link)  # relative, so the run directory can move
    os.replace(link, root / "latest")  # atomic: `latest` always names a complete checkpoint
    # newest by step; never the one just written (a run restarted with resume=never may find higher steps)
    for old in list_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_trainer_state(path: str | Path) -> dict:
    state_file = Path(path) / "trainer_state.pt"
    if not state_file.is_file():
        raise FileNotFoundError(f"{path} is not a sapo_vl checkpoint (no trainer_state.pt)")
    # memory-mapped: every rank of a large run reads the optimizer state without a private copy of it
    return torch.load(state_file, map_location="cpu", weights_only=False, mmap=True)


def resolve_resume(resume: str, run_dir: str | Path) -> Path | None:
    """"auto" / "force" -> the latest checkpoint in run_dir (or None); "never" -> None; else a checkpoint path."""
    if resume in ("never", "", None):
        return None
    if resume in ("auto", "force"):
        return latest_checkpoint(run_dir)
    path = Path(resume)
    if not (path / "trainer_state.pt").is_file():
        raise UserError(f"resume={resume!r}: no sapo_vl checkpoint there (no trainer_state.pt)")
    return path
