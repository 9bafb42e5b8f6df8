"""Prepare-script example: write a registered dataset to files in the sapo_vl record format.

    python data/scripts/export_dataset.py easy_vqa --split test --out data/easy_vqa/test.jsonl \
        --option question_types=color --option limit=500
    python data/scripts/export_dataset.py synthetic_shapes --split train --out data/shapes/train.parquet \
        --option n=2000 --option num_colors=6

JSONL output writes each image as a PNG under ``images/`` next to the file (relative paths) or, with
``--inline-images``, as a base64 data URI. Parquet output stores images as ``{bytes, path}`` structs (the Hugging
Face ``datasets.Image`` layout). Either file loads back with ``load_records(path)`` or
``load_dataset_by_name("jsonl" | "parquet", path=...)`` and gives the same records.

Adapting this to a real data set: replace ``load_dataset_by_name`` with your own reader that yields dicts
(``prompt``, ``images``, ``answer``, ...), or skip the export and load the public files in place with field
mapping (see data/README.md).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path


def parse_option(text: str) -> tuple[str, object]:
    """"key=value" -> (key, Python literal if it parses, else the string)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--option expects key=value, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="registered dataset name (e.g. easy_vqa, synthetic_shapes)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--out", required=True, type=Path, help="output .jsonl or .parquet file")
    parser.add_argument("--option", action="append", default=[], type=parse_option,
                        help="builder option key=value (repeatable), e.g. limit=100")
    parser.add_argument("--inline-images", action="store_true", help="JSONL only: images as data URIs")
    args = parser.parse_args(argv)

    from sapo_vl.data import load_dataset_by_name, write_jsonl, write_parquet

    records = load_dataset_by_name(args.name, split=args.split, **dict(args.option))
    if args.out.suffix == ".parquet":
        out = write_parquet(records, args.out)
    else:
        out = write_jsonl(records, args.out, image_dir=None if args.inline_images else "images")
    print(f"wrote {len(records)} {args.name}[{args.split}] records to {out}", file=sys.stderr)
    return out


if __name__ == "__main__":
    main()
