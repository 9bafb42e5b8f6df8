"""``sapo-vl export RUN_OR_CHECKPOINT OUT_DIR``: a training checkpoint as a Hugging Face model directory.

    sapo-vl export runs/qwen3_vl_8b_geo3k_sapo OUT_DIR                  (the run's latest checkpoint)
    sapo-vl export runs/x/checkpoints/step-000100 OUT_DIR --dtype bfloat16 --max-shard-gb 5

The output is what ``save_pretrained`` writes and ``from_pretrained``, ``sapo-vl eval --model`` and the Hub accept:
``config.json``, ``generation_config.json``, the processor files, and ``model-0000i-of-0000N.safetensors`` with
``model.safetensors.index.json``, tensors named and laid out as ``save_pretrained`` writes them (transformers'
reverse weight conversion, applied to each unit).

Memory stays bounded at any model size: the weights are read from the checkpoint's DCP shards one wrap unit (a
decoder layer, a vision block, or one tensor outside them) at a time, converted and appended to the file being
written; the safetensors header is computed first from the checkpoint's metadata, so no file is ever held whole.
Several processes (the ranks of a run exporting its final policy) split the files between them.
"""

from __future__ import annotations

import json
import shutil
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from transformers import AutoConfig, AutoProcessor
from transformers.core_model_loading import revert_weight_conversion  # runtime names and layouts -> published

from sapo_vl.checkpoint import STATE_DIR, is_checkpoint, latest_checkpoint
from sapo_vl.errors import UserError
from sapo_vl.models.shards import empty_model, units
from sapo_vl.rundir import replace_dir

_SAFETENSORS_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.float64: "F64",
                       torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
                       torch.uint8: "U8", torch.bool: "BOOL"}
DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class _File:
    name: str
    units: list[list[str]] = field(default_factory=list)  # checkpoint (runtime) names, one list per unit
    nbytes: int = 0


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory, or a run directory (its latest checkpoint)."""
    path = Path(path)
    if is_checkpoint(path):
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise UserError(f"{path} is neither a sapo_vl checkpoint (trainer_state.pt and state/) nor a run directory "
                        "with one under checkpoints/")
    return latest


def _stored(checkpoint: Path) -> dict[str, tuple[torch.Size, torch.dtype]]:
    """The model tensors a checkpoint holds: runtime name -> (shape, dtype), from its DCP metadata alone."""
    meta = dcp.FileSystemReader(str(checkpoint / STATE_DIR)).read_metadata().state_dict_metadata
    return {k.removeprefix("model."): (m.size, m.properties.dtype) for k, m in meta.items() if k.startswith("model.")}


def _files(stored: dict, dtype: torch.dtype | None, max_bytes: int) -> list[_File]:
    """Units packed in order into files of at most ``max_bytes`` (a larger unit gets a file of its own)."""
    files: list[_File] = []
    for unit in units(list(stored)):
        size = sum(stored[n][0].numel() * (dtype or stored[n][1]).itemsize for n in unit)
        if not files or files[-1].nbytes + size > max_bytes:
            files.append(_File(""))
        files[-1].units.append(unit)
        files[-1].nbytes += size
    for i, f in enumerate(files):
        f.name = f"model-{i + 1:05d}-of-{len(files):05d}.safetensors"
    return files


def _load_unit(checkpoint: Path, stored: dict, names: list[str]) -> dict[str, torch.Tensor]:
    """One unit's whole tensors, read from the DCP shards (only the bytes of these tensors)."""
    state = {f"model.{n}": torch.empty(stored[n][0], dtype=stored[n][1]) for n in names}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.distributed is disabled")
        dcp.load(state, checkpoint_id=str(checkpoint / STATE_DIR), no_dist=True)
    return {k.removeprefix("model."): v for k, v in state.items()}


def _header(model, stored: dict, file: _File, dtype: torch.dtype | None) -> tuple[bytes, list[str]]:
    """The safetensors header of ``file`` (names, dtypes, shapes and offsets in writing order), computed on meta
    tensors; returns it and the tensor order."""
    entries, order, offset = {}, [], 0
    for unit in file.units:
        meta = {n: torch.empty(stored[n][0], dtype=dtype or stored[n][1], device="meta") for n in unit}
        for name, t in revert_weight_conversion(model, meta).items():
            size = t.numel() * t.element_size()
            entries[name] = {"dtype": _SAFETENSORS_DTYPES[t.dtype], "shape": list(t.shape),
                             "data_offsets": [offset, offset + size]}
            order.append(name)
            offset += size
    header = json.dumps({"__metadata__": {"format": "pt"}, **entries}, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # safetensors pads the header to 8 bytes with spaces
    return struct.pack("<Q", len(header)) + header, order


def _write_file(checkpoint: Path, model, stored: dict, file: _File, dtype, path: Path) -> dict[str, str]:
    """Stream ``file``'s units into ``path``: header first, then each unit's tensors as they are converted."""
    header, order = _header(model, stored, file, dtype)
    written = []
    with open(path, "wb") as out:
        out.write(header)
        for unit in file.units:
            tensors = _load_unit(checkpoint, stored, unit)
            tensors = revert_weight_conversion(model, {n: t.to(dtype) if dtype else t for n, t in tensors.items()})
            for name, t in tensors.items():
                out.write(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
                written.append(name)
    if written != order:
        raise RuntimeError(f"{path.name}: tensors written in another order than the header's")
    return {name: file.name for name in order}


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, *, dtype: str = "auto",
                      max_shard_bytes: int = 5 * 10**9, rank: int = 0, world: int = 1, barrier=None) -> Path:
    """Write the Hugging Face model of ``checkpoint`` to ``out_dir`` (see the module docstring); ``out_dir`` is
    replaced whole or not at all. ``dtype``: "auto" keeps the trained weights' dtype. Under ``world`` > 1 processes
    every rank calls it (with ``barrier``, a function every rank calls to wait for the others) and writes every
    ``world``-th file; the main process writes the index, config and processor files and renames the result."""
    if dtype not in DTYPES:
        raise UserError(f"export dtype {dtype!r}: expected one of {list(DTYPES)}")
    barrier = barrier or (lambda: None)
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    stored, target = _stored(checkpoint), DTYPES[dtype]
    model = empty_model(checkpoint, {})  # meta: names, tied weights and conversions only
    tmp = out_dir.with_name(f".tmp-{out_dir.name}")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    weight_map: dict[str, str] = {}
    for file in _files(stored, target, max_shard_bytes)[rank::world]:
        weight_map.update(_write_file(checkpoint, model, stored, file, target, tmp / file.name))
    (tmp / f"weight_map-{rank}.json").write_text(json.dumps(weight_map))
    barrier()
    if rank == 0:
        _finalize(checkpoint, out_dir, dtype)
    barrier()
    return out_dir


def _finalize(checkpoint: Path, out_dir: Path, dtype: str) -> Path:
    """Main process, once every rank wrote its files: the index, config, generation config and processor files,
    then the temporary directory renamed to ``out_dir``."""
    tmp = out_dir.with_name(f".tmp-{out_dir.name}")
    weight_map: dict[str, str] = {}
    for part in sorted(tmp.glob("weight_map-*.json")):
        weight_map.update(json.loads(part.read_text()))
        part.unlink()
    total = sum((tmp / f).stat().st_size for f in set(weight_map.values()))
    (tmp / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, indent=2))
    config = AutoConfig.from_pretrained(str(checkpoint))
    if DTYPES[dtype] is not None:
        for c in (config, *(getattr(config, k, None) for k in ("text_config", "vision_config"))):
            if c is not None:
                c.dtype = DTYPES[dtype]
    config.save_pretrained(tmp)
    if (checkpoint / "generation_config.json").is_file():
        shutil.copy2(checkpoint / "generation_config.json", tmp / "generation_config.json")
    AutoProcessor.from_pretrained(str(checkpoint)).save_pretrained(tmp)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    replace_dir(tmp, out_dir)
    return out_dir
