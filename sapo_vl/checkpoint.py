"""Training checkpoints: each rank writes its own shards, and any number of processes resumes from them.

    RUN_DIR/checkpoints/step-000040/
        state/                              model weights and AdamW state, torch.distributed.checkpoint (DCP): one
                                            file per rank, no rank gathers anything
        config.json, generation_config.json the model's config (the architecture to build before loading shards)
        processor / tokenizer files         (AutoProcessor-loadable)
        trainer_state.pt                    scheduler, every rank's RNG, data position, step, config
    RUN_DIR/checkpoints/latest -> step-000040                      (the checkpoint written last)

DCP reshards on load, so a checkpoint written by N processes resumes on M (tests/test_fsdp.py: 2 -> 1 and 1 -> 2).
A checkpoint is not a Hugging Face model: ``sapo-vl export`` writes one (``sapo_vl.export``, one wrap unit at a
time), ``sapo_vl.models.load_policy`` and ``sapo-vl eval --model`` read a checkpoint directly, and a run exports its
final policy (``log.export``).

Every rank calls ``save_checkpoint``: the step is written under a temporary name and renamed into place by the main
process once every rank's shards are on disk, so a crash never leaves a half-written ``step-*`` directory (a full
disk is reported as such on every rank and the partial temp removed); only the newest ``keep_last`` are kept.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (get_model_state_dict, get_optimizer_state_dict,
                                                     set_optimizer_state_dict)
from torch.distributed.tensor import DTensor
from transformers import PreTrainedModel

from sapo_vl.errors import UserError
from sapo_vl.rundir import disk_full_error, replace_dir

_STEP_DIR = re.compile(r"^step-(\d+)$")
STATE_DIR = "state"  # the DCP directory inside a checkpoint


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


def is_checkpoint(path: str | Path) -> bool:
    """A complete sapo_vl training checkpoint (trainer state and the DCP shards' metadata)."""
    return (Path(path) / "trainer_state.pt").is_file() and (Path(path) / STATE_DIR / ".metadata").is_file()


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    ckpts = [p for p in list_checkpoints(run_dir) if is_checkpoint(p)]
    return ckpts[-1] if ckpts else None


# ------------------------------------------------------------------------------------------ state dicts


def _bare(policy):
    return getattr(policy, "module", policy)  # DDP's wrapped module; an FSDP2 module is its own


def _inner(optimizer):
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer


def _hf_model(module):
    """The Hugging Face model: ``module`` itself, or the one a (DDP- or FSDP2-wrapped) ``PolicyModule`` holds."""
    module = _bare(module)
    return module if isinstance(module, PreTrainedModel) else module.model


def model_state(module) -> dict[str, torch.Tensor]:
    """The model's weights keyed by Hugging Face name, as they are: each rank's FSDP2 shards (DTensors), or whole
    tensors in one process or under DDP. No copy, no collective. A tied weight (Qwen3-VL-2B / 4B's LM head) is kept
    once, under its first name."""
    model = _hf_model(module)
    state = get_model_state_dict(_bare(module))
    prefix = "model." if _bare(module) is not model else ""
    tied = {n for n, _ in model.named_parameters(remove_duplicate=False)} - {n for n, _ in model.named_parameters()}
    return {k.removeprefix(prefix): v for k, v in state.items() if k.removeprefix(prefix) not in tied}


def _optimizer_state(policy, optimizer) -> dict:
    """AdamW's state keyed by parameter name, this rank's shards (created, zero, when no step ran yet)."""
    return get_optimizer_state_dict(_bare(policy), _inner(optimizer))


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _is_main() -> bool:
    return not _distributed() or torch.distributed.get_rank() == 0


def _agree(error: BaseException | None) -> None:
    """Every rank learns whether any rank failed (a rank raising alone would leave the others waiting in the next
    collective until the timeout); all then raise: the first rank's error where it happened, a summary elsewhere."""
    if not _distributed():
        if error is not None:
            raise error
        return
    errors: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(errors, None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    failed = [(rank, e) for rank, e in enumerate(errors) if e is not None]
    if failed:
        raise UserError(f"rank {failed[0][0]} failed writing the checkpoint: {failed[0][1]}")


# ------------------------------------------------------------------------------------------ save / load


def save_checkpoint(run_dir: str | Path, step: int, *, policy, optimizer, processor, trainer_state: dict,
                    keep_last: int = 2) -> Path:
    """Write ``step-{step}`` (collective: every rank calls it with its own shards, ``write_checkpoint``); point
    ``latest`` at it; prune to the newest ``keep_last``. ``policy``: the prepared policy (FSDP2 root, DDP or plain
    module)."""
    root = checkpoint_dir(run_dir)
    final = write_checkpoint(root / f"step-{step:06d}", policy=policy, optimizer=optimizer, processor=processor,
                             trainer_state={**trainer_state, "step": step})
    if _is_main():
        link = root / ".latest.tmp"
        link.unlink(missing_ok=True)
        os.symlink(final.name, link)  # relative, so the run directory can move
        os.replace(link, root / "latest")  # atomic: `latest` always names a complete checkpoint
        # newest by step; never the one just written (a run restarted with resume=never may find higher steps)
        for old in list_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []:
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    _agree(None)
    return final


def write_checkpoint(final: Path, *, policy, optimizer, processor, trainer_state: dict) -> Path:
    """Write a checkpoint directory at ``final``, whole or not at all (collective): the model's (and, when given,
    the optimizer's) shards by DCP from every rank, the model config, processor and ``trainer_state`` from the main
    process, all under a temporary name renamed into place once every rank is done."""
    final = Path(final)
    tmp = final.with_name(f".tmp-{final.name}")
    main = _is_main()
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _agree(None)  # the directory exists before any rank writes into it
    error = None
    try:
        state = {"model": model_state(policy)}
        if optimizer is not None:
            state["optim"] = _optimizer_state(policy, optimizer)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch.distributed is disabled")
            dcp.save(state, checkpoint_id=str(tmp / STATE_DIR), no_dist=not _distributed())
        if main:
            model = _hf_model(policy)
            model.config.save_pretrained(tmp)
            if getattr(model, "generation_config", None) is not None:
                model.generation_config.save_pretrained(tmp)
            processor.save_pretrained(tmp)
            torch.save({"rng": rng_state(), **trainer_state}, tmp / "trainer_state.pt")
    except (Exception, CheckpointException) as exc:  # every rank must hear of it
        error = disk_full_error(exc, final, _state_bytes(policy, optimizer)) or _unwrapped(exc)
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
    _agree(error)
    if main:
        replace_dir(tmp, final)
    _agree(None)
    return final


def _unwrapped(exc: BaseException) -> BaseException:
    """The error a rank hit, not DCP's ``CheckpointException`` (a BaseException) wrapping it."""
    failures = getattr(exc, "failures", None)
    if not failures:
        return exc
    first = next(iter(failures.values()))
    return first[0] if isinstance(first, tuple) else first


def _state_bytes(policy, optimizer) -> int:
    """This rank's share of the weights and AdamW moments (for a disk-full message)."""
    local = sum((p.to_local() if isinstance(p, DTensor) else p).nbytes for p in policy.parameters())
    return local * (3 if optimizer is not None else 1)


def load_checkpoint(path: str | Path, policy, optimizer=None, *, weights: bool = True) -> None:
    """Fill ``policy``'s weights (sharded or whole, on their device; unless ``weights`` is false) and, when given,
    ``optimizer``'s state from the checkpoint at ``path``, whatever number of processes wrote it (collective under
    FSDP2). Each rank reads only its shards' bytes."""
    state = {"model": model_state(policy)} if weights else {}
    if optimizer is not None:
        state["optim"] = _optimizer_state(policy, optimizer)
        _check_optimizer(path, state["optim"])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.distributed is disabled")
        dcp.load(state, checkpoint_id=str(Path(path) / STATE_DIR), no_dist=not _distributed())
    if optimizer is not None:  # the tensors were loaded in place; this restores the param groups' hyperparameters
        set_optimizer_state_dict(_bare(policy), _inner(optimizer), state["optim"])


def _check_optimizer(path: str | Path, optim_state: dict) -> None:
    """The checkpoint must hold optimizer state for exactly the parameters this optimizer trains."""
    saved = {k.split(".", 2)[2].rsplit(".", 1)[0] for k in
             dcp.FileSystemReader(str(Path(path) / STATE_DIR)).read_metadata().state_dict_metadata
             if k.startswith("optim.state.")}
    names = set(optim_state["state"])
    if saved != names:
        diff = sorted(saved ^ names)
        raise UserError(f"the checkpoint's optimizer state does not fit this model's trainable parameters ({len(diff)} "
                        f"differ, e.g. {diff[0]}); did model.freeze_vision change?")


def load_trainer_state(path: str | Path) -> dict:
    state_file = Path(path) / "trainer_state.pt"
    if not state_file.is_file():
        raise FileNotFoundError(f"{path} is not a sapo_vl checkpoint (no trainer_state.pt)")
    if not (Path(path) / STATE_DIR / ".metadata").is_file():
        raise UserError(f"{path} is a checkpoint of an older sapo_vl (whole Hugging Face weights, no {STATE_DIR}/): "
                        f"start a new run from it with model.path={path}")
    return torch.load(state_file, map_location="cpu", weights_only=False)


def resolve_resume(resume: str, run_dir: str | Path) -> Path | None:
    """"auto" / "force" -> the latest checkpoint in run_dir (or None); "never" -> None; else a checkpoint path."""
    if resume in ("never", "", None):
        return None
    if resume in ("auto", "force"):
        latest = latest_checkpoint(run_dir)
        older = [p for p in list_checkpoints(run_dir) if (p / "trainer_state.pt").is_file() and not is_checkpoint(p)]
        if latest is None and older:
            load_trainer_state(older[-1])  # names the older format and what to do instead
        return latest
    path = Path(resume)
    if not (path / "trainer_state.pt").is_file():
        raise UserError(f"resume={resume!r}: no sapo_vl checkpoint there (no trainer_state.pt)")
    return path
