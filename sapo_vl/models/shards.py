"""Sharded loading: no process ever holds the whole model.

Under FSDP2 a policy of tens of GB cannot be loaded whole on every rank (``from_pretrained`` on each of 8 ranks is 8
copies in host memory, and each copy pushed to a GPU before it is sharded). Instead:

1. ``empty_model`` builds the architecture from ``config.json`` with its parameters on the meta device (no memory;
   the buffers, e.g. rotary frequencies, are computed for real);
2. the trainer shards it (``accelerator.prepare``: FSDP2's ``fully_shard`` on meta parameters allocates nothing);
3. ``materialize`` allocates each rank's shards on its device (``to_empty``) and puts the buffers back;
4. ``load_safetensors`` fills them: each rank reads only its own rows of each tensor from the safetensors files
   (``safe_open(...).get_slice``), converted the way ``from_pretrained`` converts them.

Peak host memory per rank is its shards plus one tensor's rows (tests/test_fsdp.py and benchmarks/bench_memory.py).
Resuming fills the same shards from a ``torch.distributed.checkpoint`` instead (``sapo_vl.checkpoint``).

Checkpoint keys are renamed and converted as transformers' loader does (``transformers.conversion_mapping``: legacy
prefixes, Qwen3-VL-MoE's experts stored transposed in the published files). A conversion that would need several
files' tensors at once (e.g. merging per-expert tensors) is refused with a clear error; one process then loads
with ``from_pretrained`` as before.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from accelerate import init_empty_weights
from safetensors import safe_open
from torch.distributed.tensor import DTensor, Shard
from transformers import AutoConfig, AutoModelForImageTextToText, GenerationConfig
from transformers.conversion_mapping import get_model_conversion_mapping
from transformers.core_model_loading import Transpose, WeightConverter, WeightRenaming, rename_source_key

from sapo_vl.errors import UserError


class UnsupportedConversion(UserError):
    """The checkpoint needs a transformers weight conversion that row-by-row loading cannot apply."""


def empty_model(path: str | Path, kwargs: dict):
    """The Hugging Face model of the checkpoint at ``path`` with its parameters on the meta device and its buffers
    computed; ``kwargs``: what ``from_pretrained`` would get (dtype, attn_implementation, experts_implementation)."""
    config = AutoConfig.from_pretrained(str(path))
    with init_empty_weights(include_buffers=False):
        model = AutoModelForImageTextToText.from_config(config, **kwargs)
    model.tie_weights()  # built this way, a tied LM head (Qwen3-VL-2B / 4B) is not tied yet
    model.eval()  # as from_pretrained returns it
    if (Path(path) / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(str(path))
    return model


def materialize(module: torch.nn.Module, device: str | torch.device) -> None:
    """Allocate ``module``'s (sharded) parameters on ``device``, uninitialised, keeping the parameter objects (an
    optimizer built on them stays valid); the buffers keep their values."""
    buffers = {name: b.detach().clone() for name, b in module.named_buffers() if not b.is_meta}
    shared: dict[int, list[str]] = {}  # tied weights: one parameter under several names
    for name, p in module.named_parameters(remove_duplicate=False):
        shared.setdefault(id(p), []).append(name)
    module.to_empty(device=device)
    for first, *others in (names for names in shared.values() if len(names) > 1):
        tied = module.get_parameter(first)
        for name in others:  # to_empty gives each name its own tensor outside FSDP2: tie them again
            owner, _, attr = name.rpartition(".")
            if module.get_parameter(name) is not tied:
                setattr(module.get_submodule(owner), attr, tied)
    with torch.no_grad():
        for name, b in module.named_buffers():
            if name in buffers:
                b.copy_(buffers[name])


def local_rows(param: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """(this rank's local tensor, first global row, end row) of a parameter: the whole tensor unsharded, else the
    rows FSDP2 gives this rank (``Shard(0)``, as ``torch.chunk`` splits: ceil(rows / N) each, the last ones short)."""
    if not isinstance(param, DTensor):
        return param.data, 0, param.shape[0] if param.dim() else 0
    if tuple(param.placements) != (Shard(0),):
        raise NotImplementedError(f"sharded loading handles FSDP2's Shard(0) only, not {param.placements}")
    local = param.to_local()
    rows, ranks = param.shape[0], param.device_mesh.size()
    start = min(rows, param.device_mesh.get_local_rank() * -(-rows // ranks))
    return local, start, start + local.shape[0]


class KeyMap:
    """Checkpoint key -> (parameter name, transpose) as transformers' loader maps it for ``model``: its renamings,
    then at most one converter, which must be a one-to-one transpose of dimensions other than 0 (so that a rank's
    rows of the stored tensor are its rows of the parameter)."""

    def __init__(self, model, targets: dict[str, torch.Tensor]):
        transforms = get_model_conversion_mapping(model)
        self.renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
        self.converters = [t for t in transforms if isinstance(t, WeightConverter)]
        self.prefix, self.targets = getattr(model, "base_model_prefix", None), targets

    def __call__(self, key: str, stored_shape: list[int]) -> tuple[str, tuple[int, int] | None]:
        name, pattern = rename_source_key(key, self.renamings, self.converters, self.prefix, self.targets)
        if pattern is None:
            return name, None
        converter = next(c for c in self.converters if pattern in c.source_patterns)
        ops = converter.operations
        if not (len(ops) == 1 and isinstance(ops[0], Transpose) and 0 not in (ops[0].dim0, ops[0].dim1)):
            raise UnsupportedConversion(
                f"checkpoint tensor {key!r} needs transformers' conversion {converter!r} "
                f"({', '.join(type(op).__name__ for op in ops)}), which loading by rows does not apply; convert the "
                "checkpoint once with `from_pretrained` + `save_pretrained`")
        target = self.targets.get(name)
        if target is None or list(target.shape) == list(stored_shape):  # as the loader's check_dims: stored as is
            return name, None
        swapped = list(stored_shape)
        swapped[ops[0].dim0], swapped[ops[0].dim1] = swapped[ops[0].dim1], swapped[ops[0].dim0]
        return name, (ops[0].dim0, ops[0].dim1) if swapped == list(target.shape) else None


_UNIT = re.compile(r"^(.*?\.(?:layers|blocks)\.\d+)\.")  # a decoder layer or vision block: one wrap unit


def units(names: list[str]) -> list[list[str]]:
    """The tensor names grouped by wrap unit, in order of first appearance (a tensor outside every unit is a unit
    of its own)."""
    groups: dict[str, list[str]] = {}
    for name in names:
        m = _UNIT.match(name)
        groups.setdefault(m.group(1) if m else name, []).append(name)
    return list(groups.values())


def safetensors_files(path: str | Path) -> dict[str, list[str]]:
    """file name -> the tensor keys it holds, from ``model.safetensors.index.json`` or the single file."""
    path = Path(path)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        files: dict[str, list[str]] = {}
        for key, name in json.loads(index.read_text())["weight_map"].items():
            files.setdefault(name, []).append(key)
        return files

    found = sorted(p.name for p in path.glob("*.safetensors"))
    if not found:
        raise FileNotFoundError(f"no safetensors weights in {path}")
    out = {}
    for name in found:
        with safe_open(str(path / name), framework="pt") as f:
            out[name] = list(f.keys())
    return out


@torch.no_grad()
def load_safetensors(model, path: str | Path) -> None:
    """Fill ``model``'s parameters and persistent buffers (sharded or whole, already on their device) from the
    checkpoint at ``path``; each rank reads only its rows. Every parameter must be filled (tied ones once): a missing
    or unexpected tensor is an error naming it."""
    targets = dict(model.named_parameters(remove_duplicate=False))
    persistent = {name for name, _ in model.state_dict(keep_vars=True).items()}
    targets.update({n: b for n, b in model.named_buffers() if n in persistent})
    keymap = KeyMap(model, targets)
    filled, unexpected = set(), []
    for file, unit in ((file, unit) for file, keys in safetensors_files(path).items() for unit in units(keys)):
        # one wrap unit per opening: the file's pages this rank touched stay mapped (and in its RSS) for one unit only
        with safe_open(str(Path(path) / file), framework="pt", device="cpu") as f:
            for key in unit:
                view = f.get_slice(key)
                name, transpose = keymap(key, view.get_shape())
                if name not in targets:
                    unexpected.append(key)
                    continue
                local, start, stop = local_rows(targets[name])
                if local.numel():
                    rows = view[start:stop] if local.dim() else view[:]
                    rows = rows if transpose is None else rows.transpose(*transpose)
                    if tuple(rows.shape) != tuple(local.shape):
                        raise UserError(f"{path}/{file}: tensor {key!r} has shape {view.get_shape()}, the model's "
                                        f"{name} {list(targets[name].shape)}; is config.json from the same model?")
                    local.copy_(rows)
                filled.add(id(targets[name]))
    missing = sorted(n for n, t in targets.items() if id(t) not in filled)
    if missing or unexpected:
        raise UserError(f"{path}: the checkpoint does not match the model built from its config.json: "
                        f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
                        f"(e.g. {unexpected[:3]})")


@torch.no_grad()
def own_memory(model) -> None:
    """Give every parameter and buffer memory of its own (``from_pretrained`` on CPU may leave them as views into
    memory-mapped files)."""
    for module in model.modules():
        for p in module._parameters.values():
            if p is not None:
                p.data = p.data.clone()
        for name, b in list(module._buffers.items()):
            if b is not None:
                module._buffers[name] = b.clone()
