"""``sapo-vl make-tiny-model OUT_DIR [--dense] ...``: build the offline tiny Qwen3-VL(-MoE) checkpoint
(``sapo_vl.models.tiny``)."""

from __future__ import annotations

import argparse

from sapo_vl.models.tiny import TinyConfig, make_tiny_model


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sapo-vl make-tiny-model", description=__doc__.split("\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--dense", action="store_true", help="dense Qwen3-VL instead of Qwen3-VL-MoE")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden-size", type=int, default=TinyConfig.hidden_size)
    parser.add_argument("--layers", type=int, default=TinyConfig.num_hidden_layers)
    parser.add_argument("--experts", type=int, default=TinyConfig.num_experts)
    parser.add_argument("--vocab-size", type=int, default=TinyConfig.vocab_size)
    parser.add_argument("--intermediate-size", type=int, default=TinyConfig.intermediate_size,
                        help="the dense MLP's width (with --dense, e.g. --hidden-size 1024 --layers 12 "
                             "--intermediate-size 4096: a 156M-parameter model)")
    parser.add_argument("--moe-intermediate-size", type=int, default=TinyConfig.moe_intermediate_size,
                        help="each expert's MLP width")
    args = parser.parse_args(argv)
    cfg = TinyConfig(moe=not args.dense, seed=args.seed, hidden_size=args.hidden_size,
                     num_hidden_layers=args.layers, num_experts=args.experts, vocab_size=args.vocab_size,
                     intermediate_size=args.intermediate_size, moe_intermediate_size=args.moe_intermediate_size)
    out = make_tiny_model(args.out_dir, cfg)
    n_files = sum(1 for p in out.iterdir() if p.is_file())
    size_mb = sum(p.stat().st_size for p in out.iterdir() if p.is_file()) / 1e6
    print(f"wrote tiny {'MoE' if cfg.moe else 'dense'} Qwen3-VL to {out} ({n_files} files, {size_mb:.1f} MB)")
    return 0
