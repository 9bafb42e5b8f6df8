"""``load_records``: raw rows from any source (``readers.open_rows``) -> normalised records, plus writers.

It normalises every row once with ``normalize_record`` (field mapping, template, image checks), applies
``on_error`` and returns ``Records`` (a ``list[dict]`` carrying a ``LoadReport``). Training datasets and evaluation
tasks both load through it.
"""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sapo_vl.data.readers import BadRow, open_rows
from sapo_vl.data.records import LoadReport, RecordError, Records, RecordSpec, check_on_error, normalize_record

__all__ = ["image_to_data_uri", "load_records", "write_jsonl", "write_parquet"]


def load_records(source: Any, spec: RecordSpec | None = None, *, split: str | None = None, format: str | None = None,
                 on_error: str = "raise", limit: int | None = None, **options: Any) -> Records:
    """Load and normalise records from a JSONL / JSON / Parquet file, a folder of them, a ``save_to_disk``
    folder, a ``datasets.Dataset`` (or ``DatasetDict`` with ``split``) or a list of dicts.

    ``spec`` (a ``RecordSpec``) or its fields as keywords (``prompt_field="question"``,
    ``prompt_template="{prompt}\\nAnswer with one word."``, ``default_reward="vqa"``, ...) say how rows become
    records. ``on_error``: "raise" (``RecordError`` naming index, id, field, expectation) or "skip" (counted in
    ``result.report.skipped`` by reason and logged once). ``limit``: keep at most this many valid records.
    """
    check_on_error(on_error)
    spec = RecordSpec.of(**options) if spec is None else (replace(spec, **options) if options else spec)
    rows = open_rows(source, format, split)
    spec = replace(spec, dataset=spec.dataset or (Path(rows.name).stem if not rows.name.startswith("<") else "records"),
                   base_dir=spec.base_dir if spec.base_dir is not None else rows.base_dir,
                   answer_names=rows.class_names.get(spec.fields.answer, spec.answer_names))
    report = LoadReport(source=rows.name, total=len(rows))
    kept: list[dict] = []
    seen_ids: dict[str, int] = {}
    for index, raw in enumerate(rows):
        if limit is not None and len(kept) >= limit:
            break
        report.seen += 1
        try:
            record = _record(raw, index, spec, seen_ids)
        except RecordError as err:
            if on_error == "raise":
                raise
            report.add_skip(err)
            continue
        seen_ids[record["id"]] = index
        kept.append(record)
    report.kept = len(kept)
    report.log()
    return Records(kept, report)


def _record(raw: Any, index: int, spec: RecordSpec, seen_ids: dict[str, int]) -> dict:
    """One row -> one record; every failure of a row (even one our checks did not foresee) is a RecordError."""
    if isinstance(raw, BadRow):
        raise RecordError(raw.reason, index, None, raw.field, raw.detail)
    try:
        record = normalize_record(raw, index, spec)
    except RecordError:
        raise
    except (ValueError, TypeError, OSError, RecursionError, MemoryError) as exc:
        raise RecordError("invalid_row", index, None, "<row>", f"{type(exc).__name__}: {exc}") from exc
    if record["id"] in seen_ids:
        raise RecordError("duplicate_id", index, record["id"], spec.fields.id,
                          f"id already used by record {seen_ids[record['id']]}; expected unique ids")
    return record


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
