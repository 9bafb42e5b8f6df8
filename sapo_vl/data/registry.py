"""Named datasets: the extension point of the data layer.

A builder is any callable ``builder(split: str = "train", **options) -> list[dict]`` returning normalised records
(``sapo_vl.data.records``). Register it under a name and every recipe can use it::

    from sapo_vl.data import register_dataset, load_records

    @register_dataset("my_charts")
    def build_my_charts(split="train", root="data/my_charts", **kw):
        return load_records(f"{root}/{split}.jsonl", prompt_field="question", image_field="chart", **kw)

Built in: "synthetic_shapes", "easy_vqa", and the generic file loaders "jsonl", "parquet", "disk" (``path=`` is
required; a ``{split}`` placeholder in the path is filled with the split).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from sapo_vl.data.easy_vqa import build_easy_vqa
from sapo_vl.data.records import Records
from sapo_vl.data.sources import load_records
from sapo_vl.data.synthetic import build_synthetic_shapes

__all__ = ["DATASETS", "concat_records", "load_dataset_by_name", "register_dataset"]

Builder = Callable[..., list]
DATASETS: dict[str, Builder] = {}


def register_dataset(name: str, builder: Builder | None = None, *, overwrite: bool = False):
    """Register ``builder`` under ``name``; usable as ``register_dataset(name, fn)`` or ``@register_dataset(name)``.

    Re-registering a taken name raises unless ``overwrite=True``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"dataset name must be a non-empty str, got {name!r}")

    def _register(fn: Builder) -> Builder:
        if not callable(fn):
            raise TypeError(f"dataset builder for {name!r} must be callable, got {type(fn).__name__}")
        if name in DATASETS and not overwrite and DATASETS[name] is not fn:
            raise ValueError(f"dataset {name!r} is already registered; pass overwrite=True to replace it")
        DATASETS[name] = fn
        return fn

    return _register(builder) if builder is not None else _register


def load_dataset_by_name(name: str, split: str = "train", **kwargs) -> list[dict]:
    """Build the records of the registered dataset ``name`` for ``split`` (``kwargs`` go to its builder)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; registered datasets: {', '.join(sorted(DATASETS))}")
    return DATASETS[name](split=split, **kwargs)


def _file_loader(fmt: str) -> Builder:
    def build(split: str = "train", *, path: str | os.PathLike | None = None, **kwargs) -> Records:
        if path is None:
            raise ValueError(f"the {fmt!r} dataset needs path= (a {fmt} source; '{{split}}' is replaced by the split)")
        text = os.fspath(path)
        if fmt == "disk":  # a DatasetDict picks the split itself; a plain Dataset ignores it
            return load_records(text.replace("{split}", split), format=fmt, split=split, **kwargs)
        return load_records(text.replace("{split}", split), format=fmt, **kwargs)

    build.__name__ = f"build_{fmt}"
    build.__doc__ = f"Generic {fmt} loader: ``load_records(path, format={fmt!r}, **kwargs)``."
    return build


def concat_records(*record_lists: list[dict]) -> list[dict]:
    """Concatenate record lists from several datasets, checking that ids stay unique across them.

    The seam for mixing: a ratio-based mixer samples from the lists this takes.
    """
    seen: dict[str, int] = {}
    out: list[dict] = []
    for k, records in enumerate(record_lists):
        for record in records:
            rid = record["id"]
            if rid in seen:
                raise ValueError(f"record id {rid!r} appears in dataset {seen[rid]} and dataset {k}; ids must be "
                                 "unique across mixed datasets (give each dataset its own dataset= prefix)")
            seen[rid] = k
            out.append(record)
    return out


register_dataset("synthetic_shapes", build_synthetic_shapes)
register_dataset("easy_vqa", build_easy_vqa)
for _fmt in ("jsonl", "parquet", "disk"):
    register_dataset(_fmt, _file_loader(_fmt))
