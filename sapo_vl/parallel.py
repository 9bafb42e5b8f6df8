"""How a run spreads the policy over processes: one process, data parallel (DDP) or sharded (FSDP2), as the
``accelerate launch`` config says, and the checks that a run asked to shard really does.

accelerate picks the strategy from the launch config (``recipes/accelerate/*.yaml``). Two of its behaviours are
corrected here:

- Without CUDA, accelerate turns an FSDP config into plain multi-process data parallel: its CPU state has no FSDP.
  FSDP2's ``fully_shard`` works over gloo, so the FSDP plugin is put back and the run shards exactly as it does on
  GPUs, through accelerate's own FSDP2 code (tests/test_fsdp.py proves it on 2 CPU processes).
- A run asked to shard (an FSDP launch config, or a recipe's ``train.sharding: fsdp2``) that would not (one
  process, FSDP1, a DDP launch) stops with a ``UserError`` instead of training unsharded.

DeepSpeed is refused: accelerate runs its engine's optimizer step inside ``backward``, once per micro-batch, which
breaks ``PolicyUpdate``'s exact accumulation over token-budget micro-batches. FSDP2 shards the same state.

Under FSDP2 every rank must run the same collectives: ``PolicyUpdate`` pads the micro-batch count, ``even_share``
pads evaluation prompts, generation decodes in lockstep (every rank until all are done), every forward runs the
vision tower once on every rank (a blank image where a rank has none: ``models.vision.every_rank_encodes``), and
every rank writes its own checkpoint shards (``sapo_vl.checkpoint``).
"""

from __future__ import annotations

import os
from collections import Counter
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin, InitProcessGroupKwargs
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy
from torch.distributed.tensor import DTensor

from sapo_vl.errors import UserError

FSDP2_CONFIG = "recipes/accelerate/fsdp2.yaml"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "false").lower() == "true"


def make_accelerator(train, weights_dtype: torch.dtype = torch.float32) -> Any:
    """The run's ``Accelerator`` for the ``train`` section and the trained weights' dtype: bf16 autocast over fp32
    weights per ``train.mixed_precision``, none for pure bf16 weights (compute is bf16 already, and accelerate's FSDP2
    would upcast them to fp32); FSDP2 restored on CPU; checked against ``train.sharding``; collectives wait up to
    ``train.collective_timeout_s``. Under FSDP2 the model is loaded into its shards by sapo_vl
    (``sapo_vl.models.shards``), so accelerate's own rank-0 broadcast loading is turned off."""
    cuda = torch.cuda.is_available()
    if _env_flag("ACCELERATE_USE_DEEPSPEED"):
        raise UserError("DeepSpeed is not supported: its engine steps the optimizer inside every backward, which "
                        "breaks sapo_vl's micro-batch accumulation. Launch with FSDP2, which shards parameters, "
                        f"gradients and optimizer state the same way: --config_file {FSDP2_CONFIG}")
    mp = train.mixed_precision
    autocast = weights_dtype == torch.float32 and (mp == "bf16" or (mp == "auto" and cuda))
    accelerator = Accelerator(mixed_precision="bf16" if autocast else "no", cpu=not cuda,
                              kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(
                                  seconds=train.collective_timeout_s))])
    if _env_flag("ACCELERATE_USE_FSDP") and accelerator.distributed_type == DistributedType.MULTI_CPU:
        _fsdp_on_cpu(accelerator)
    kind = strategy(accelerator)
    check_sharding(kind, train.sharding, fsdp_asked=_env_flag("ACCELERATE_USE_FSDP"),
                   processes=accelerator.num_processes)
    if kind == "fsdp2":
        plugin = accelerator.state.fsdp_plugin
        plugin.cpu_ram_efficient_loading = False
        # gradients reduced in fp32 (accelerate would reduce them in bf16 under bf16 compute)
        plugin.mixed_precision_policy = MixedPrecisionPolicy(
            param_dtype=torch.bfloat16 if autocast else None, reduce_dtype=torch.float32)
    return accelerator


def leave_process_group(accelerator) -> None:
    """A multi-process run's end: every rank waits for the others, then leaves the process group. Left to the
    interpreter's exit, gloo's threads can find another rank gone and abort the process ("terminate called without
    an active exception", SIGABRT) after all the work is done."""
    if accelerator is not None and accelerator.num_processes > 1:
        accelerator.wait_for_everyone()
        accelerator.end_training()


def _fsdp_on_cpu(accelerator) -> None:
    """What accelerate's state does for FSDP on GPUs (``AcceleratorState.__init__``: distributed type in both
    shared states, plugin, mixed precision), done on CPU, where it stops at MULTI_CPU."""
    state = accelerator.state
    plugin = FullyShardedDataParallelPlugin()  # from the FSDP_* variables accelerate launch set
    if state.mixed_precision != "no":
        plugin.set_mixed_precision(state.mixed_precision)
    state.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    state.fsdp_plugin = plugin


def strategy(accelerator) -> str:
    """``single`` (one process), ``ddp``, ``fsdp2`` or ``fsdp1``."""
    kind = accelerator.distributed_type
    if kind == DistributedType.NO or accelerator.num_processes == 1:
        return "single"
    if kind == DistributedType.FSDP:
        return "fsdp2" if accelerator.is_fsdp2 else "fsdp1"
    return "ddp"


def check_sharding(kind: str, required: str, *, fsdp_asked: bool, processes: int) -> None:
    """Refuse a run that was asked to shard and would not."""
    launch = f"accelerate launch --config_file {FSDP2_CONFIG} --num_processes N -m sapo_vl.cli train RECIPE.yaml"
    if kind == "fsdp1":
        raise UserError(f"FSDP version 1 is not supported; set fsdp_version: 2 in the accelerate config "
                        f"(as {FSDP2_CONFIG} does)")
    if fsdp_asked and kind != "fsdp2":
        raise UserError(f"the accelerate config asks for FSDP but this run has {processes} process(es), so nothing "
                        f"would be sharded; launch 2 or more ({launch}), or leave FSDP out of the config")
    if required == "fsdp2" and kind != "fsdp2":
        raise UserError(f"this recipe sets train.sharding=fsdp2 (sized for parameters, gradients and optimizer "
                        f"state sharded over GPUs) but the run is {kind}; launch it with {launch}, or set "
                        "train.sharding=any to run unsharded")


def is_sharded(accelerator) -> bool:
    return accelerator is not None and strategy(accelerator) == "fsdp2"


def describe_sharding(policy, accelerator) -> str:
    """One line: how many parameters are sharded over how many ranks, the wrap units (``_no_split_modules``) and
    the precision of compute and gradient reduction."""
    params = list(policy.parameters())
    sharded = sum(p.numel() for p in params if isinstance(p, DTensor))
    units = Counter(type(m).__name__.removeprefix("FSDP") for m in policy.modules() if isinstance(m, FSDPModule))
    mp = accelerator.state.fsdp_plugin.mixed_precision_policy
    weights = str(next(iter(params)).dtype).removeprefix("torch.") if params else "-"
    compute = str(mp.param_dtype).removeprefix("torch.") if mp is not None and mp.param_dtype else weights
    reduce = str(mp.reduce_dtype).removeprefix("torch.") if mp is not None and mp.reduce_dtype else compute
    precision = f"{weights} weights, compute in {compute}, gradients reduced in {reduce}"
    return (f"FSDP2 over {accelerator.num_processes} processes: {sharded:,} of {sum(p.numel() for p in params):,} "
            f"parameters sharded; wrap units {', '.join(f'{n} x{c}' for n, c in sorted(units.items()))}; "
            f"{precision}")


def reduce_mean(values: dict[str, float], accelerator) -> dict[str, float]:
    """Mean of each metric over the ranks that report it (ranks may lack a key, e.g. no negative-advantage token
    for a SAPO gate statistic, or no prompt of a mixture source)."""
    if accelerator.num_processes == 1 or not values:
        return values

    key_lists: list = [None] * accelerator.num_processes
    dist.all_gather_object(key_lists, sorted(values))
    keys = sorted(set().union(*key_lists))
    sums = torch.tensor([[values.get(k, 0.0), float(k in values)] for k in keys], dtype=torch.float64,
                        device=accelerator.device)  # (K, 2) value, present
    sums = accelerator.reduce(sums, reduction="sum")
    return {k: (v / n) for k, (v, n) in zip(keys, sums.tolist()) if n > 0}


def reduce_max_values(values: dict[str, float], accelerator) -> dict[str, float]:
    """The largest value of each metric over the ranks that report it (e.g. a phase's peak memory: the rank that
    needs the most is the one that runs out)."""
    if accelerator is None or accelerator.num_processes == 1:
        return values

    every: list = [None] * accelerator.num_processes
    dist.all_gather_object(every, values)
    return {k: max(v[k] for v in every if k in v) for k in sorted(set().union(*every))}


def reduce_max(value: int, accelerator) -> int:
    """The largest ``value`` over the ranks."""
    if accelerator is None or accelerator.num_processes == 1:
        return value
    t = torch.tensor([value], dtype=torch.long, device=accelerator.device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return int(t.item())


def even_share(records: list, fill, accelerator) -> tuple[list, int]:
    """``records`` padded with ``fill`` to the longest share of any rank (sharded generation is collective: every
    rank must call ``generate`` as often as the others); returns (padded, how many are real)."""
    if not is_sharded(accelerator):
        return records, len(records)
    longest = reduce_max(len(records), accelerator)
    return records + [fill] * (longest - len(records)), len(records)


def compute_dtype(module) -> torch.dtype:
    """The dtype ``module`` computes in: FSDP2's mixed-precision ``param_dtype`` where it has one, else its weights'."""
    if isinstance(module, FSDPModule):
        dtype = module._get_fsdp_state()._mp_policy.param_dtype
        if dtype is not None:
            return dtype
    return next(module.parameters()).dtype


GENERATION_SLACK = 0.10  # of a GPU's memory left free through generation: allocator fragmentation, workspaces


def free_device_bytes(device: torch.device) -> tuple[float, float]:
    """(bytes a new tensor can use now, total) on a CUDA device: the driver's free memory plus the blocks the caching
    allocator holds unused (the update's freed activations stay reserved by it)."""
    free, total = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device), total


def generation_budget(device: torch.device, reserve: float) -> float:
    """Bytes of decoder layers a generation call may keep gathered on ``device``: its free memory
    (``free_device_bytes``) minus ``reserve`` and ``GENERATION_SLACK`` of the device; unbounded on CPU."""
    if device.type != "cuda":
        return float("inf")
    free, total = free_device_bytes(device)
    return free - reserve - GENERATION_SLACK * total


def kept_units(policy, reserve: float = 0.0) -> list:
    """The FSDP2 wrap units to keep gathered through a generation call (``gathered``): the decoder layers, which run at
    every decoding step (the root stays gathered within each generation call anyway; the vision blocks run once per
    chunk), in order, as many as fit in this GPU's free memory (``free_device_bytes``) minus ``reserve`` (what the
    generation itself allocates: KV cache, logits) and ``GENERATION_SLACK`` of the device, each at its size in the
    compute dtype (FSDP2 gathers in the mixed-precision policy's ``param_dtype``), the same number on every rank
    (``sapo-vl plan`` predicts the count). All of them on CPU."""
    visual = getattr(getattr(getattr(policy, "model", None), "model", None), "visual", None)
    skip = {id(m) for m in visual.modules()} if visual is not None else set()
    units = [m for m in policy.modules() if isinstance(m, FSDPModule) and m is not policy and id(m) not in skip]
    device = next(policy.parameters()).device
    budget = generation_budget(device, reserve)
    kept, used = 0, 0.0
    for m in units:
        used += sum(p.numel() for p in m.parameters()) * compute_dtype(m).itemsize
        if used > budget:
            break
        kept += 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        count = torch.tensor([kept], device=device)
        torch.distributed.all_reduce(count, op=torch.distributed.ReduceOp.MIN)
        kept = int(count.item())
    return units[:kept]


@contextmanager
def gathered(units: list):
    """FSDP2: inside, each of ``units`` (wrap units) keeps its weights unsharded after its first forward, so a
    decoding loop all-gathers it once instead of once per decoding step; each is resharded and its own
    reshard-after-forward setting restored on exit. Costs the memory of those units unsharded (``kept_units``)."""
    states = [m._get_fsdp_state() for m in units]
    # exactly what set_reshard_after_forward changes, to put back
    saved = [(st._auto_reshard_after_forward, [g.post_forward_mesh_info for g in st._fsdp_param_groups])
             for st in states]
    for m in units:
        m.set_reshard_after_forward(False, recurse=False)
    try:
        yield
    finally:
        for m, st, (auto, infos) in zip(units, states, saved):
            st._auto_reshard_after_forward = auto
            for group, info in zip(st._fsdp_param_groups, infos):
                group.post_forward_mesh_info = info
            m.reshard()
