"""A run's policy outside the training loop: built and loaded (sharded under FSDP2: no process ever holds the whole
model), its frozen KL reference, the state a resume restores, and the final Hugging Face export.

``sapo_vl.train`` composes these; tests/fsdp_driver.py builds its policies with ``build_update`` too.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from accelerate.utils import fsdp2_prepare_model, set_seed

from sapo_vl.checkpoint import is_checkpoint, latest_checkpoint, load_checkpoint, set_rng_state, write_checkpoint
from sapo_vl.export import export_checkpoint
from sapo_vl.models.load import load_policy, resolve_dtype
from sapo_vl.models.logprobs import PolicyModule
from sapo_vl.models.shards import load_safetensors, materialize
from sapo_vl.models.tiny import TinyConfig, make_tiny_model
from sapo_vl.sections import Config
from sapo_vl.errors import ConfigError, UserError
from sapo_vl.parallel import strategy
from sapo_vl.rollout.collate import PromptFormat
from sapo_vl.rundir import atomic_dir
from sapo_vl.update import PolicyUpdate


def _complete(path: Path) -> bool:
    """A model directory with its config and weights (what a killed in-place write of an older version lacked)."""
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def model_path(cfg: Config, checkpoint: Path | None = None) -> Path:
    """The policy to load: ``checkpoint`` (resume) or model.path; "tiny" builds the offline tiny Qwen3-VL-MoE into
    the run directory once (atomically, so a kill never leaves half a model)."""
    if checkpoint is not None:
        return checkpoint
    if cfg.model.path != "tiny":
        return Path(cfg.model.path)
    path = Path(cfg.output_dir) / "tiny_init"
    if not _complete(path):
        try:
            tiny = TinyConfig(**cfg.model.tiny)
            tiny.validate()
        except (TypeError, ValueError) as err:
            raise ConfigError(f"model.tiny: {err}") from None
        with atomic_dir(path) as tmp:
            make_tiny_model(tmp, tiny)
    return path


def training_dtype(model) -> torch.dtype:
    """The trained weights' dtype (``model.dtype``): "auto" is fp32 master weights on every device."""
    return torch.float32 if model.dtype == "auto" else resolve_dtype(model.dtype)


def build_update(path: Path, model_cfg, algo, train, rollout, accelerator,
                 resume: tuple[Path, dict] | None = None) -> PolicyUpdate:
    """The policy at ``path`` (a model directory, or the checkpoint in ``resume`` = (checkpoint, trainer state)),
    prepared for the launch, with its optimizer and schedule (``PolicyUpdate``; ``model_cfg``: the ``model``
    section with a concrete dtype). Under FSDP2 no process holds the whole model: it is built empty, sharded, and
    each rank reads its own rows of the weights (the model's safetensors, or the checkpoint's shards). Otherwise it
    is loaded whole, as one process would."""
    sharded = strategy(accelerator) == "fsdp2"
    model, _ = load_policy(path, model_cfg, accelerator.device, empty=sharded)
    update = PolicyUpdate(model, algo, train, rollout, accelerator)
    if sharded:
        materialize(update.policy, accelerator.device)
        if resume is not None:
            load_checkpoint(resume[0], update.policy)
        else:
            load_safetensors(model, path)
    if resume is not None:
        update.resume(*resume)
    return update


def resume_rng(state: dict, cfg: Config, accelerator) -> None:
    """Each rank continues its own random stream; a run resumed on a different number of processes cannot (the
    data each rank draws differs anyway), so each rank then starts a new stream from the seed and the step."""
    rng = state["rng"]
    if isinstance(rng, list) and len(rng) == accelerator.num_processes:
        set_rng_state(rng[accelerator.process_index])
    elif isinstance(rng, dict) and accelerator.num_processes == 1:
        set_rng_state(rng)
    else:
        set_seed(cfg.seed + 1_000_003 * state["step"] + accelerator.process_index)
        if accelerator.is_main_process:
            saved = len(rng) if isinstance(rng, list) else 1
            print(f"[sapo-vl] the checkpoint was written by {saved} process(es), this run has "
                  f"{accelerator.num_processes}: weights, optimizer and data position continue; random streams are "
                  "reseeded", flush=True)


def pending_rollouts(state: dict | None, accelerator) -> list:
    """This rank's queue of stale rollouts from a checkpoint (none before rollout.staleness existed). Queued
    rollouts belong to the ranks that made them: a resume on another number of processes cannot take them over."""
    queues = state.get("pending") if state else None
    if not queues or not any(queues):
        return []
    if len(queues) != accelerator.num_processes:
        raise UserError(f"the checkpoint holds rollouts queued by rollout.staleness on {len(queues)} process(es); "
                        f"resume it on {len(queues)} (this run has {accelerator.num_processes})")
    return list(queues[accelerator.process_index])


def reference_model(cfg: Config, update: PolicyUpdate, fmt: PromptFormat, accelerator, dtype: torch.dtype,
                     resumed: bool):
    """The frozen KL reference: the policy RL starts from (after any warm-up), built only when kl_beta > 0. Under
    FSDP2 it is sharded like the policy (no rank holds it whole) and its forward is the sharded root's.

    When a warm-up changed the weights it is written once to OUTPUT_DIR/reference (a checkpoint directory), so a
    resumed run uses the same one."""
    ref_dir = Path(cfg.output_dir) / "reference"
    source = ref_dir if is_checkpoint(ref_dir) or _complete(ref_dir) else None if cfg.warmup.steps > 0 \
        else model_path(cfg)
    if source is None and resumed:
        raise UserError(f"{ref_dir} is missing: the KL reference of this run (its policy after the warm-up) was "
                        "not saved, so a resumed run cannot rebuild it; start a new output_dir")
    model_cfg = cfg.model.model_copy(update={"dtype": str(dtype).removeprefix("torch."),
                                              "gradient_checkpointing": False})
    if not update.sharded:
        ref = copy.deepcopy(update.model) if source is None else load_policy(source, model_cfg, accelerator.device)[0]
    else:
        ref = load_policy(model_path(cfg), model_cfg, accelerator.device, empty=True)[0].requires_grad_(False)
        ref = fsdp2_prepare_model(accelerator, PolicyModule(ref, distributed=True))
        materialize(ref, accelerator.device)
        if source is None:  # the warmed-up policy: same wrap units and ranks, so the same shard on every rank
            with torch.no_grad():
                for mine, theirs in zip(ref.parameters(), update.policy.parameters(), strict=True):
                    mine.to_local().copy_(theirs.to_local())
        elif is_checkpoint(source):
            load_checkpoint(source, ref)
        else:
            load_safetensors(ref.model, source)
    if source is None:
        write_checkpoint(ref_dir, policy=ref, optimizer=None, processor=fmt.processor, trainer_state={"step": 0})
    return ref.requires_grad_(False).eval()


def export_final(out_dir: Path, dtype: str, accelerator) -> None:
    """The final policy as a Hugging Face model in OUTPUT_DIR/model (``log.export``), written from the checkpoint
    just saved, one wrap unit at a time, the files split between the ranks."""
    checkpoint = latest_checkpoint(out_dir)
    export_checkpoint(checkpoint, out_dir / "model", dtype=dtype, rank=accelerator.process_index,
                      world=accelerator.num_processes, barrier=accelerator.wait_for_everyone)
    if accelerator.is_main_process:
        print(f"[sapo-vl] exported the policy of {checkpoint.name} to {out_dir / 'model'} (Hugging Face safetensors)",
              flush=True)
