"""``sapo-vl data inspect SOURCE``: what a dataset holds, before GPU hours are spent on it.

SOURCE is a registered dataset (``easy_vqa``, a plug-in's), a data file or folder (JSONL / JSON / Parquet /
``save_to_disk``, read with ``load_records``: pass field mappings as ``prompt_field=question``), a training recipe
(its ``data`` section: the dataset or every mixture source, train and held-out splits) or an eval task
(``task:NAME`` or a task YAML; ``--data-path`` or ``--fixture`` for its data). ``key=value`` arguments are the
builder's / loader's options (values parsed as YAML), or a recipe's dotted overrides (``data.kwargs.n=8``).

For each split it reports: records kept and skipped (by reason, with the first example of each), extra columns,
images per record and image size / aspect-ratio percentiles, prompt length percentiles (characters; tokens with the
model's processor when ``--model`` is given, image tokens included), the answer distribution, and where each record's
reward is routed (names the reward registry does not know are flagged). ``--json`` prints the same as JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from sapo_vl.config import load_config
from sapo_vl.data.images import decode_images
from sapo_vl.data.mixture import SOURCE_COLUMN, load_sources
from sapo_vl.data.records import LoadReport, Records
from sapo_vl.data.registry import DATASETS, load_dataset_by_name
from sapo_vl.data.sources import load_records
from sapo_vl.errors import DataError, UserError
from sapo_vl.evaluation.tasks import load_task_records, resolve_task
from sapo_vl.models.load import load_processor
from sapo_vl.plugins import import_plugins
from sapo_vl.rewards import REWARDS
from sapo_vl.rollout.collate import PromptFormat, count_prompt_tokens
from sapo_vl.sections import parse_override

PERCENTILES = (0, 50, 90, 99, 100)


def _percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    q = np.percentile(np.asarray(values, dtype=np.float64), PERCENTILES)
    return {("max" if p == 100 else "min" if p == 0 else f"p{p}"): round(float(v), 2) for p, v in zip(PERCENTILES, q)}


def _image_size(image: Any) -> tuple[int, int]:
    """(width, height) from the header only: a lazy eval record holds a path or bytes, not pixels."""
    if hasattr(image, "size") and hasattr(image, "mode"):
        return image.size


    source = io.BytesIO(image) if isinstance(image, bytes) else image
    with Image.open(source) as img:
        return img.size


def _answer_key(answer: Any) -> str:
    return json.dumps(answer, ensure_ascii=False, default=str) if isinstance(answer, list) else str(answer)


def summarize(records: list[dict], report: LoadReport | None, top: int = 10, count_tokens=None) -> dict:
    """The inspection of one split's records (``count_tokens(record) -> int`` adds prompt-token percentiles)."""
    sizes = [_image_size(im) for r in records for im in r.get("images") or []]
    answers = Counter(_answer_key(r.get("answer")) for r in records if r.get("answer") is not None)
    rewards = Counter(str(r.get("reward")) for r in records)
    text = [len(r["prompt"]) if isinstance(r["prompt"], str) else len(json.dumps(r["prompt"])) for r in records]
    out: dict[str, Any] = {
        "records": len(records),
        "source_rows": report.total if report else None, "read": report.seen if report else len(records),
        "skipped": dict(report.skipped) if report else {},
        "first_skip_of_each_reason": {k: v[0] for k, v in report.examples.items() if v} if report else {},
        "columns": sorted({k for r in records for k in r} - {"id", "prompt", "images", "answer", "reward", "meta"}),
        "images_per_record": dict(sorted(Counter(len(r.get("images") or []) for r in records).items())),
        "image_width": _percentiles([w for w, _ in sizes]), "image_height": _percentiles([h for _, h in sizes]),
        "image_aspect_ratio": _percentiles([max(w, h) / max(min(w, h), 1) for w, h in sizes]),
        "prompt_chars": _percentiles(text),
        "answers": {"distinct": len(answers), "missing": sum(r.get("answer") is None for r in records),
                    "top": dict(answers.most_common(top))},
        "rewards": dict(rewards.most_common()),
        "unregistered_rewards": sorted(n for n in rewards if n != "None" and n not in REWARDS),
    }
    sources = Counter(r.get(SOURCE_COLUMN) for r in records if r.get(SOURCE_COLUMN) is not None)
    if len(sources) > 1:
        out["data_sources"] = dict(sources.most_common())
    if count_tokens is not None:
        out["prompt_tokens"], out["prompt_token_errors"] = _token_stats(records, count_tokens)
    return out


def _token_stats(records: list[dict], count_tokens) -> tuple[dict | None, dict]:
    lengths, errors = [], Counter()
    for r in records:
        try:
            lengths.append(count_tokens({**r, "images": decode_images(r.get("images"))}))
        except DataError as err:  # what collation would reject (aspect ratio, placeholders, a broken image)
            errors[getattr(err, "reason", type(err).__name__)] += 1
    return _percentiles(lengths), dict(errors)


def _splits(args: argparse.Namespace) -> list[tuple[str, list[dict]]]:
    """(label, records) for every split SOURCE names."""
    source, path = args.source, Path(args.source)
    options = {k: v for pair in args.options for k, v in parse_override(pair, DataError)[1].items()}
    if source.startswith("task:") or (path.suffix in (".yaml", ".yml") and "source" in _yaml_keys(path)):
        spec = resolve_task(source.removeprefix("task:"))
        data_path = args.data_path or (str(spec.path.parent / spec.fixture) if args.fixture and spec.fixture else None)
        return [(f"task {spec.name}", load_task_records(spec, data_path, args.limit))]
    if path.suffix in (".yaml", ".yml") and path.is_file():
        data = load_config(path, args.options).data.model_copy(update={"on_error": args.on_error})
        return [(f"{s.name} [{split}]", recs) for s in load_sources(data)
                for split, recs in (("train", s.train), ("held-out", s.eval))]
    if path.exists():
        return [(str(path), load_records(path, split=args.split, on_error=args.on_error, limit=args.limit, **options))]
    if source not in DATASETS and (path.suffix or "/" in source):
        raise DataError(f"dataset source not found: {path}")
    records = load_dataset_by_name(source, split=args.split or "train", on_error=args.on_error, **options)
    if args.limit:
        records = Records(records[:args.limit], getattr(records, "report", None))
    return [(f"{source} [{args.split or 'train'}]", records)]


def _yaml_keys(path: Path) -> set:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return set()
    return set(data) if isinstance(data, dict) else set()


def _print(label: str, info: dict) -> None:
    def line(name: str, value: Any) -> None:
        if value not in (None, {}, []):
            print(f"  {name:<22} {value}")

    print(f"{label}")
    line("records", f"{info['records']} kept of {info['read']} read" + (
        f" ({info['source_rows']} in the source)" if info["source_rows"] is not None else ""))
    line("skipped", info["skipped"])
    for reason, example in info["first_skip_of_each_reason"].items():
        line(f"  first {reason}", example)
    for key in ("columns", "data_sources", "images_per_record", "image_width", "image_height", "image_aspect_ratio",
                "prompt_chars", "prompt_tokens", "prompt_token_errors", "rewards", "unregistered_rewards"):
        line(key, info.get(key))
    a = info["answers"]
    line("answers", f"{a['distinct']} distinct, {a['missing']} missing; top: {a['top']}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sapo-vl data", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    q = sub.add_parser("inspect", help="counts, skips, image sizes, prompt lengths, answers, reward routing")
    q.add_argument("source", help="a registered dataset, a data file or folder, a recipe, or task:NAME")
    q.add_argument("options", nargs="*", metavar="key=value", help="builder / loader options (YAML values)")
    q.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import a plug-in module first (repeatable)")
    q.add_argument("--split", help="the split to read (a registered dataset: default train)")
    q.add_argument("--limit", type=int, help="read at most this many records")
    q.add_argument("--on-error", choices=("skip", "raise"), default="skip",
                   help="skip and count bad records (default) or stop at the first")
    q.add_argument("--model", help="a model directory: count prompt tokens with its processor")
    q.add_argument("--system-prompt", help="with --model: the system prompt training adds")
    q.add_argument("--min-pixels", type=int, help="with --model: the image pixel budget")
    q.add_argument("--max-pixels", type=int, help="with --model: the image pixel budget")
    q.add_argument("--data-path", help="an eval task's local data")
    q.add_argument("--fixture", action="store_true", help="an eval task's own fixture as its data")
    q.add_argument("--top", type=int, default=10, help="how many of the most frequent answers to list")
    q.add_argument("--json", action="store_true", help="print JSON instead of text")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)

    import_plugins(args.imports)
    count = None
    if args.model:
        if not (Path(args.model) / "config.json").is_file():
            raise UserError(f"--model {args.model}: no Hugging Face checkpoint there (config.json missing)")
        fmt = PromptFormat(load_processor(args.model), args.system_prompt, args.min_pixels, args.max_pixels)
        count = partial(count_prompt_tokens, fmt)
    results = {label: summarize(records, getattr(records, "report", None), args.top, count)
               for label, records in _splits(args)}
    if args.json:
        json.dump(results, sys.stdout, indent=1, ensure_ascii=False, default=str)
        print()
    else:
        for label, info in results.items():
            _print(label, info)
    return 0
