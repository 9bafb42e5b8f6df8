"""``sapo-vl plot RUN_DIR [RUN_DIR ...]``: PNG curves from runs' ``metrics.jsonl`` (``sapo_vl.plots``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sapo_vl.plots import plot_compare, plot_run


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sapo-vl plot",
        description="Draw PNG curves from RUN_DIR/metrics.jsonl. One run: a summary figure "
                    "(default RUN_DIR/plots/summary.png). Several runs: an overlay of their key curves "
                    "(default ./compare.png).",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directory (or its metrics.jsonl)")
    p.add_argument("--out", default=None, help="output directory")
    p.add_argument("--labels", nargs="+", default=None, help="legend names for the runs (comparison)")
    p.add_argument("--smoothing", type=float, default=None, help="EMA weight in [0, 1); default: by length")
    p.add_argument("--panels", action="store_true", help="also write one PNG per panel (single run)")
    return p


def main(argv: list[str]) -> int:
    """``sapo-vl plot RUN_DIR [RUN_DIR ...] [--out DIR] ...``: prints each written path; 1 on a data error."""
    args = _parser().parse_args(argv)
    try:
        if len(args.runs) == 1:
            paths = plot_run(args.runs[0], args.out, smoothing=args.smoothing, panels=args.panels)
        else:
            out = Path(args.out) if args.out is not None else Path.cwd()
            target = out / "compare.png"
            paths = [plot_compare(args.runs, target, labels=args.labels, smoothing=args.smoothing)]
    except (FileNotFoundError, ValueError) as err:
        print(f"sapo-vl plot: error: {err}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0

