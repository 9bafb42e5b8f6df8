"""Raw rows from every kind of source, for training and evaluation alike: the one reader of the project.

``open_rows(source, format=None, split=None) -> Rows`` reads

- a JSON Lines file (``.jsonl`` / ``.ndjson``; a line that is not a JSON object becomes a ``BadRow``),
- a JSON document (``.json``): a list of objects, or an object of objects keyed by id (MathVista's annotation
  layout); a ``.json`` file that is really JSON Lines is read as JSON Lines,
- Parquet (``.parquet``, batch by batch: structs stay dicts, e.g. HF images ``{bytes, path}``),
- a directory: a ``datasets`` ``save_to_disk`` folder (``split`` picks from a ``DatasetDict``), or a folder of
  ``*.parquet`` / ``*.jsonl`` files read in name order,
- an in-memory ``datasets.Dataset`` / ``DatasetDict``, or a list of dicts.

Rows are raw: turning them into records is ``load_records``' job. Every source knows its size without reading
its rows, so a ``limit`` reads only what it needs. ``datasets``' own JSON loader is not used: it fails a whole
file on one bad line or on a column whose type changes between rows, where we name the line and go on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from sapo_vl._jsonl import iter_json_objects
from sapo_vl.errors import DataError

FORMATS = ("jsonl", "json", "parquet", "disk")
_BATCH = 256


@dataclass
class BadRow:
    """A row the reader itself could not parse (e.g. invalid JSON); ``load_records`` raises or skips it."""

    reason: str
    field: str
    detail: str


@dataclass
class Rows:
    """The raw rows of one source. ``base_dir``: where relative image paths resolve. ``class_names``: column ->
    label names of a ``datasets.ClassLabel`` column (integer answers become names)."""

    name: str
    size: int
    iterate: Callable[[], Iterator[dict | BadRow]]
    base_dir: Path | None = None
    class_names: dict[str, list[str]] = field(default_factory=dict)

    def __iter__(self) -> Iterator[dict | BadRow]:
        return self.iterate()

    def __len__(self) -> int:
        return self.size


def infer_format(path: str | os.PathLike) -> str:
    """The format of a local path: by suffix for files, by contents for directories."""
    p = Path(path)
    if p.is_dir():
        if (p / "dataset_dict.json").exists() or (p / "state.json").exists():
            return "disk"
        for kind in ("parquet", "jsonl"):
            if any(p.glob(f"*.{kind}")):
                return kind
        raise DataError(f"cannot tell the format of directory {p}: expected a `datasets` save_to_disk folder "
                        "(dataset_dict.json or state.json) or *.parquet / *.jsonl files")
    suffix = p.suffix.lower()
    for kind, suffixes in (("jsonl", (".jsonl", ".ndjson")), ("json", (".json",)), ("parquet", (".parquet", ".pq"))):
        if suffix in suffixes:
            return kind
    raise DataError(f"cannot infer the format of {str(path)!r}; pass format= one of {FORMATS}")


def _files(path: Path, ext: str) -> list[Path]:
    return sorted(path.glob(f"*.{ext}")) if path.is_dir() else [path]


def _jsonl_rows(files: list[Path]) -> Rows:
    def iterate() -> Iterator[dict | BadRow]:
        for file in files:
            for lineno, row, error in iter_json_objects(file):
                if error is None:
                    yield row
                else:
                    what = "is not valid JSON: " if isinstance(error, json.JSONDecodeError) else ""
                    yield BadRow("invalid_json", "<line>", f"line {lineno} of {file} {what}{error}")

    size = 0
    for file in files:
        with open(file, encoding="utf-8", errors="replace") as fh:
            size += sum(1 for line in fh if line.strip())
    return Rows(str(files[0] if len(files) == 1 else files[0].parent), size, iterate)


def _json_rows(path: Path) -> Rows:
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # several documents, one per line: JSON Lines under a .json name
            return _jsonl_rows([path])
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if isinstance(data, dict) and data and all(isinstance(v, dict) for v in data.values()):
        data = list(data.values())
    elif isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of objects (or an object of objects), got {type(data).__name__}")
    return _list_rows(data, str(path))


def _parquet_rows(path: Path) -> Rows:
    files = _files(path, "parquet")

    def iterate() -> Iterator[dict]:
        for file in files:
            for batch in pq.ParquetFile(file).iter_batches(batch_size=_BATCH):
                yield from batch.to_pylist()

    return Rows(str(path), sum(pq.ParquetFile(f).metadata.num_rows for f in files), iterate)


def _select_split(ds: Any, split: str | None, where: str) -> Any:
    import datasets  # here: seconds to import, and only Hub and saved datasets need it

    if isinstance(ds, datasets.DatasetDict):
        if split is None and len(ds) == 1:
            split = next(iter(ds))
        if split not in ds:
            raise DataError(f"{where} is a DatasetDict with splits {sorted(ds)}; pass split= one of them "
                            f"(got {split!r})")
        return ds[split]
    return ds


def _hf_rows(ds: Any, name: str) -> Rows:
    """Raw rows without decoding images (arrow format: images stay ``{bytes, path}``, so one corrupt image fails
    its own row with a named error)."""
    import datasets  # here: seconds to import, and only Hub and saved datasets need it

    def iterate() -> Iterator[dict]:
        for table in ds.with_format("arrow").iter(batch_size=_BATCH):
            yield from table.to_pylist()

    features = getattr(ds, "features", None) or {}
    names = {col: list(f.names) for col, f in features.items() if isinstance(f, datasets.ClassLabel)}
    return Rows(name, len(ds), iterate, class_names=names)


def _list_rows(rows: Sequence[Any], name: str) -> Rows:
    return Rows(name, len(rows), lambda: iter(rows))


def open_rows(source: Any, format: str | None = None, split: str | None = None) -> Rows:
    """The raw rows of ``source`` (a path, a ``datasets.Dataset`` / ``DatasetDict``, or a list of dicts)."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if not path.exists():
            raise DataError(f"dataset source not found: {path}")
        fmt = format or infer_format(path)
        if fmt not in FORMATS:
            raise DataError(f"unknown format {fmt!r}; expected one of {FORMATS}")
        if fmt == "disk":
            import datasets  # here: seconds to import, and only Hub and saved datasets need it

            rows = _hf_rows(_select_split(datasets.load_from_disk(str(path)), split, str(path)), str(path))
        elif fmt == "jsonl":
            rows = _jsonl_rows(_files(path, "jsonl"))
        elif fmt == "json":
            rows = _json_rows(path)
        else:
            rows = _parquet_rows(path)
        rows.base_dir = path.resolve() if path.is_dir() else path.resolve().parent
        return rows
    if type(source).__module__.startswith("datasets"):
        return _hf_rows(_select_split(source, split, "the given dataset"), "<datasets.Dataset>")
    if isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        return _list_rows(source, "<list>")
    raise DataError(f"unsupported dataset source {type(source).__name__}; expected a path, a datasets.Dataset or "
                    "a list of dicts")
