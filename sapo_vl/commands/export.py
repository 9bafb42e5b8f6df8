"""``sapo-vl export RUN_OR_CHECKPOINT OUT_DIR``: a training checkpoint as a Hugging Face model directory
(``sapo_vl.export``)."""

from __future__ import annotations

import argparse

from sapo_vl.export import DTYPES, export_checkpoint, resolve_checkpoint


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sapo-vl export", description=__doc__.split("\n")[0])
    parser.add_argument("source", help="a run directory (its latest checkpoint) or a checkpoint directory")
    parser.add_argument("out_dir")
    parser.add_argument("--dtype", default="auto", choices=list(DTYPES),
                        help="weights' dtype in the export (auto: as trained, e.g. fp32 master weights)")
    parser.add_argument("--max-shard-gb", type=float, default=5.0, help="largest safetensors file (GB, default 5)")
    args = parser.parse_args(argv)
    checkpoint = resolve_checkpoint(args.source)
    out = export_checkpoint(checkpoint, args.out_dir, dtype=args.dtype, max_shard_bytes=int(args.max_shard_gb * 1e9))
    print(f"exported {checkpoint} -> {out} ({len(list(out.glob('*.safetensors')))} safetensors files)")
    return 0
