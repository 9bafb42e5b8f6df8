"""Readers for JSONL, Parquet, ``datasets`` (saved to disk or in memory) and lists of dicts, plus writers.

``load_records`` is the one entry point: it reads raw rows from any source, normalises them with
``normalize_record`` (field mapping, image decoding, validation), applies ``on_error`` and returns ``Records``
(a ``list[dict]`` carrying a ``LoadReport``).
"""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from sapo_vl._jsonl import iter_json_objects
from sapo_vl.data.records import (
    FieldMap,
    LoadReport,
    RecordError,
    RecordOptions,
    Records,
    check_on_error,
    check_prompt_length,
    normalize_record,
)

__all__ = [
    "image_to_data_uri",
    "infer_format",
    "iter_hf_dataset",
    "iter_jsonl",
    "iter_parquet",
    "load_records",
    "write_jsonl",
    "write_parquet",
]

FORMATS = ("jsonl", "parquet", "disk")
_BATCH = 256


class _BadRow:
    """A row the reader itself could not parse (e.g. invalid JSON); carries the error for on_error handling."""

    def __init__(self, reason: str, field: str, detail: str):
        self.reason, self.field, self.detail = reason, field, detail


def iter_jsonl(path: str | os.PathLike) -> Iterator[dict | _BadRow]:
    """Yield one dict per non-blank line; an unparsable line yields a ``_BadRow`` naming the line."""
    for lineno, row, error in iter_json_objects(path):
        if isinstance(error, json.JSONDecodeError):
            yield _BadRow("invalid_json", "<line>", f"line {lineno} of {path} is not valid JSON: {error}")
        elif error is not None:
            yield _BadRow("invalid_json", "<line>", f"line {lineno} of {path}: {error}")
        else:
            yield row


def iter_parquet(path: str | os.PathLike) -> Iterator[dict]:
    """Yield rows of a Parquet file batch by batch (structs become dicts, e.g. HF image ``{bytes, path}``)."""
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=_BATCH):
        yield from batch.to_pylist()


def _select_split(ds: Any, split: str | None, where: str) -> Any:
    import datasets

    if isinstance(ds, datasets.DatasetDict):
        if split is None or split not in ds:
            raise ValueError(f"{where} is a DatasetDict with splits {sorted(ds)}; pass split= one of them "
                             f"(got {split!r})")
        return ds[split]
    return ds


def iter_hf_dataset(ds: Any) -> Iterator[dict]:
    """Yield raw rows of a ``datasets.Dataset`` without decoding images (arrow format: images stay
    ``{bytes, path}`` dicts, so one corrupt image fails its own row with a named error)."""
    for table in ds.with_format("arrow").iter(batch_size=_BATCH):
        yield from table.to_pylist()


def _class_names(ds: Any, column: str) -> list[str] | None:
    import datasets

    feature = getattr(ds, "features", {}).get(column) if hasattr(ds, "features") else None
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def infer_format(path: str | os.PathLike) -> str:
    """"jsonl" for .jsonl/.json(l) files, "parquet" for .parquet, "disk" for a directory (``save_to_disk``)."""
    p = Path(path)
    if p.is_dir():
        return "disk"
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise ValueError(f"cannot infer the format of {str(path)!r}; pass format= one of {FORMATS}")


def _open_source(source: Any, fmt: str | None, split: str | None) -> tuple[Iterable, str, Path | None, Any]:
    """Returns (raw rows, source name, base_dir for relative image paths, hf dataset or None)."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"dataset source not found: {path}")
        fmt = fmt or infer_format(path)
        if fmt == "jsonl":
            return iter_jsonl(path), str(path), path.resolve().parent, None
        if fmt == "parquet":
            return iter_parquet(path), str(path), path.resolve().parent, None
        if fmt == "disk":
            import datasets

            ds = _select_split(datasets.load_from_disk(str(path)), split, str(path))
            return iter_hf_dataset(ds), str(path), path.resolve(), ds
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    if type(source).__module__.startswith("datasets"):
        ds = _select_split(source, split, "the given dataset")
        return iter_hf_dataset(ds), "<datasets.Dataset>", None, ds
    if isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        return source, "<list>", None, None
    raise TypeError(f"unsupported dataset source {type(source).__name__}; expected a path, a datasets.Dataset "
                    "or a list of dicts")


def load_records(
    source: Any,
    *,
    format: str | None = None,
    split: str | None = None,
    dataset: str | None = None,
    prompt_field: str | None = None,
    image_field: str | Sequence[str] | None = None,
    answer_field: str | None = None,
    id_field: str | None = None,
    reward_field: str | None = None,
    meta_field: str | None = None,
    prompt_template: str | None = None,
    default_reward: str | None = None,
    require_answer: bool = True,
    on_error: str = "raise",
    limit: int | None = None,
    base_dir: str | os.PathLike | None = None,
    count_tokens: Callable[[dict], int] | None = None,
    max_prompt_length: int | None = None,
) -> Records:
    """Load and normalise records from a JSONL / Parquet file, a ``save_to_disk`` folder, a ``datasets.Dataset``
    (or ``DatasetDict`` with ``split``) or a list of dicts.

    - ``*_field``: the raw column feeding each normalised key (defaults: id, prompt, images|image, answer,
      reward, meta). Other columns pass through unchanged.
    - ``prompt_template``: formats str prompts, e.g. ``"{prompt}\\nAnswer with one word."`` (any column by name).
    - ``default_reward``: reward name for records without one. ``require_answer``: a missing answer is an error.
    - ``on_error``: "raise" (``RecordError`` naming index, id, field, expectation) or "skip" (counted in
      ``result.report.skipped`` by reason and logged once as a warning).
    - ``limit``: keep at most this many valid records (reading stops there).
    - ``base_dir``: where relative image paths resolve; defaults to the file's folder (cwd for in-memory data).
    - ``count_tokens`` + ``max_prompt_length``: drop or reject over-long prompts (``check_prompt_length``).
    """
    check_on_error(on_error)
    if max_prompt_length is not None and count_tokens is None:
        raise ValueError("max_prompt_length needs count_tokens (a callable record -> number of prompt tokens)")
    rows, name, file_dir, hf = _open_source(source, format, split)
    fields = FieldMap.from_args(id_field=id_field, prompt_field=prompt_field, image_field=image_field,
                                answer_field=answer_field, reward_field=reward_field, meta_field=meta_field)
    opts = RecordOptions(
        dataset=dataset or (Path(name).stem if not name.startswith("<") else "records"),
        fields=fields, base_dir=base_dir if base_dir is not None else file_dir,
        require_answer=require_answer, default_reward=default_reward, prompt_template=prompt_template,
        answer_names=_class_names(hf, fields.answer) if hf is not None else None,
    )
    report = LoadReport(source=name)
    kept: list[dict] = []
    seen_ids: dict[str, int] = {}
    for index, raw in enumerate(rows):
        if limit is not None and len(kept) >= limit:
            break
        report.seen += 1
        try:
            if isinstance(raw, _BadRow):
                raise RecordError(raw.reason, index, None, raw.field, raw.detail)
            record = normalize_record(raw, index, opts)
            if record["id"] in seen_ids:
                raise RecordError("duplicate_id", index, record["id"], fields.id,
                                  f"id already used by record {seen_ids[record['id']]}; expected unique ids")
        except RecordError as err:
            if on_error == "raise":
                raise
            report.add_skip(err)
            continue
        seen_ids[record["id"]] = index
        kept.append(record)
    report.kept = len(kept)
    report.log()
    out = Records(kept, report)
    if max_prompt_length is not None:
        out = check_prompt_length(out, count_tokens, max_prompt_length, on_error)
    return out


# ---------------------------------------------------------------------------------------------------- writers


def _png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def image_to_data_uri(image) -> str:
    """Encode a PIL image as a ``data:image/png;base64,...`` URI (lossless)."""
    return "data:image/png;base64," + base64.b64encode(_png_bytes(image)).decode("ascii")


def write_jsonl(records: Iterable[dict], path: str | os.PathLike, image_dir: str | None = "images") -> Path:
    """Write normalised records as JSONL. Images go to PNG files under ``image_dir`` (relative to the JSONL's
    folder, referenced by relative path) or, with ``image_dir=None``, inline as data URIs.
    Loading the file back with ``load_records`` gives the same records."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for record in records:
            refs = []
            for k, image in enumerate(record.get("images", [])):
                if image_dir is None:
                    refs.append(image_to_data_uri(image))
                    continue
                rel = Path(image_dir) / f"{_safe_name(record['id'])}-{k}.png"
                (path.parent / rel).parent.mkdir(parents=True, exist_ok=True)
                image.save(path.parent / rel, format="PNG")
                refs.append(rel.as_posix())
            fh.write(json.dumps({**record, "images": refs}, ensure_ascii=False) + "\n")
    return path


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def write_parquet(records: Iterable[dict], path: str | os.PathLike) -> Path:
    """Write normalised records to Parquet with images as ``{bytes, path}`` structs (the HF ``Image`` layout).

    Arrow needs one type per column: records must agree on the type of prompt, answer and each meta key.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{**r, "images": [{"bytes": _png_bytes(im), "path": None} for im in r.get("images", [])]}
            for r in records]
    if rows and all(not r.get("meta") for r in rows):  # Parquet cannot store an empty struct; {} comes back
        rows = [{k: v for k, v in r.items() if k != "meta"} for r in rows]
    try:
        table = pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValueError(f"records cannot share one Arrow schema ({exc}); make each column's type uniform "
                         "(e.g. all prompts str or all message lists) or use write_jsonl") from exc
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path
