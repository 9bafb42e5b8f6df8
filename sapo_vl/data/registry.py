"""Named datasets: the extension point of the data layer.

A builder is any callable ``builder(split: str = "train", **options) -> list[dict]`` returning normalised records
(``sapo_vl.data.records``). Register it under a name and every recipe, mixture, eval task
(``source: {type: registered, name: ...}``) and ``sapo-vl data inspect`` can use it::

    from sapo_vl.data import register_dataset, load_records

    @register_dataset("my_charts")
    def build_my_charts(split="train", root="data/my_charts", on_error="raise"):
        return load_records(f"{root}/{split}.jsonl", prompt_field="question", image_field="chart",
                            on_error=on_error)

A builder that names an ``on_error`` parameter gets the recipe's ``data.on_error``. Built in: "synthetic_shapes",
"synthetic_shapes_colors", "easy_vqa", "human_eval", and the generic file loaders "jsonl", "json", "parquet", "disk"
(``path=`` is required; a ``{split}`` placeholder in the path is filled with the split).
"""

from __future__ import annotations

import difflib
import inspect
import os
from collections.abc import Callable

from sapo_vl.data.easy_vqa import build_easy_vqa
from sapo_vl.data.human_eval import build_human_eval
from sapo_vl.data.records import Records
from sapo_vl.data.sources import load_records
from sapo_vl.data.synthetic import build_synthetic_shapes, build_synthetic_shapes_colors
from sapo_vl.errors import DataError
from sapo_vl.registry import Registry

__all__ = ["DATASETS", "load_dataset_by_name", "register_dataset"]

DATASETS = Registry("dataset")
register_dataset = DATASETS.register


def _check_options(name: str, builder: Callable, options: dict) -> None:
    """Options the builder cannot take are a user error now, not a TypeError from inside it."""
    params = inspect.signature(builder).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    known = [k for k, p in params.items() if k != "split" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        close = [m for u in unknown for m in difflib.get_close_matches(u, known, n=1)]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise DataError(f"dataset {name!r} has no option(s) {unknown}{hint}; its options: {known}")


def load_dataset_by_name(name: str, split: str = "train", *, on_error: str | None = None, **options) -> list[dict]:
    """Build the records of the registered dataset ``name`` for ``split`` (``options`` go to its builder;
    ``on_error`` too when the builder names that parameter)."""
    builder = DATASETS[name]
    if on_error is not None and "on_error" in inspect.signature(builder).parameters and "on_error" not in options:
        options = {**options, "on_error": on_error}
    _check_options(name, builder, options)
    return builder(split=split, **options)


def _file_loader(fmt: str) -> Callable[..., Records]:
    def build(split: str = "train", *, path: str | os.PathLike | None = None, on_error: str = "raise",
              **options) -> Records:
        if path is None:
            raise DataError(f"the {fmt!r} dataset needs path= (a {fmt} source; '{{split}}' is replaced by the split)")
        return load_records(os.fspath(path).replace("{split}", split), format=fmt, on_error=on_error,
                            split=split if fmt == "disk" else None, **options)

    build.__name__ = f"build_{fmt}"
    build.__doc__ = f"Generic {fmt} loader: ``load_records(path, format={fmt!r}, **options)``."
    return build


register_dataset("synthetic_shapes", build_synthetic_shapes)
register_dataset("synthetic_shapes_colors", build_synthetic_shapes_colors)
register_dataset("easy_vqa", build_easy_vqa)
register_dataset("human_eval", build_human_eval)
for _fmt in ("jsonl", "json", "parquet", "disk"):
    register_dataset(_fmt, _file_loader(_fmt))
