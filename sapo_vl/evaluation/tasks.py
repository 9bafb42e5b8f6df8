"""Declarative evaluation tasks: the YAML schema (``TaskSpec``), its validation, name resolution, and turning
a benchmark's rows into records (``id``, ``prompt``, ``images``, ``answer``, ``reward``, ``meta`` and the
verifier's extra columns) -- the same record layout as ``sapo_vl.data``, so rollout code and verifiers are shared
with training.

A task file (see ``eval/README.md`` for the full schema)::

    name: easy_vqa
    version: 2
    source: {type: registered, name: easy_vqa, split: test, kwargs: {shuffle: false}}
    verifier: {name: vqa, kwargs: {vqa_metric: exact}, columns: {}, threshold: 1.0}
    generation: {n: 1, temperature: 0.0, top_p: 1.0, max_new_tokens: 32}
    k: [1]

Records are read and normalised by ``sapo_vl.data`` (``load_records`` over a local file, or a registered dataset);
this module only turns a benchmark row into a record-shaped row (field aliases, adapter, prompt template, system
prompt, image fields, verifier columns).

Eval tasks are a registry, ``TASKS`` (name -> a function returning the ``TaskSpec``), filled from the ``<name>.yaml``
files of, in priority order: ``$SAPO_VL_EVAL_DIR``, an ``eval/`` directory found walking up from the current
directory, one found walking up from this package (an editable install), and the tasks bundled in the package
(``sapo_vl/evaluation/builtin_tasks/``, the offline tasks). Plug-ins register their own
(``TASKS.register("my_task", lambda: load_task_file(path))``). Any path to a ``.yaml`` file works too.
"""

from __future__ import annotations

import functools
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, PositiveInt, field_validator, model_validator

from sapo_vl.data import Records, RecordSpec, load_dataset_by_name, load_records, render_template
from sapo_vl.data.images import as_image_list
from sapo_vl.data.records import RESERVED_KEYS
from sapo_vl.errors import UserError
from sapo_vl.evaluation.adapters import ADAPTERS, TaskDataError
from sapo_vl.evaluation.official import OFFICIAL
from sapo_vl.registry import Registry
from sapo_vl.sections import Section, validated

VERIFIER_IS_OFFICIAL = "pass@1"  # `official: pass@1`: the verifier's verdict is the benchmark's definition (code)

BUILTIN_DIR = Path(__file__).parent / "builtin_tasks"


class TaskSpecError(UserError, ValueError):
    """A task YAML file is malformed: names the file and the key."""


class SourceSpec(Section):
    type: Literal["auto", "jsonl", "json", "parquet", "disk", "registered"] = "auto"
    path: str | None = None  # default data path (relative to the YAML file)
    env: str | None = None  # environment variable holding the data path
    name: str | None = None  # a dataset registered in sapo_vl.data.DATASETS (type: registered)
    kwargs: dict[str, Any] = {}  # options of the registered dataset's builder
    split: str | None = None
    image_root: str | None = None  # where relative image paths point, relative to the data root
    hint: str | None = None  # where to get the data, shown when it is missing

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and raw.get("type") in ("pip", "hf_disk"):  # the names of task version 1
            raise ValueError(f"type {raw['type']!r} was renamed: use " + (
                "{type: registered, name: <dataset>}" if raw["type"] == "pip" else "'disk'"))
        return raw

    @model_validator(mode="after")
    def _registered_has_a_name(self):
        if self.type == "registered" and not self.name:
            raise ValueError("name (a registered dataset) is required when type is 'registered'")
        return self


class PromptSpec(Section):
    template: str | None = None  # default: "{question}"; a registered dataset's prompt as it is
    system: str | None = None


class VerifierSpec(Section):
    name: str = "math"  # a sapo_vl.rewards.REWARDS key; rows may override it through a "reward" field
    kwargs: dict[str, Any] = {}  # constant keyword arguments to the reward function
    columns: dict[str, str] = {}  # reward-function column -> row field
    threshold: float = 1.0  # a completion is correct when its reward >= threshold

    @field_validator("columns")
    @classmethod
    def _no_record_keys(cls, columns: dict) -> dict:
        clash = sorted(set(columns) & set(RESERVED_KEYS))
        if clash:
            raise ValueError(f"{clash} clash with record keys {RESERVED_KEYS}")
        return columns


class GenerationSpec(Section):
    n: int = Field(1, ge=1)
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)  # 0 = off
    max_new_tokens: int = Field(512, ge=1)
    min_pixels: int | None = None
    max_pixels: int | None = None
    seed: int | None = 0


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, (str, int)) and not isinstance(value, bool) else value


class TaskSpec(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")  # letters, digits, '_', '-', '.'
    source: SourceSpec
    prompt: PromptSpec = PromptSpec()  # or a string: the template
    verifier: VerifierSpec
    answer: str | None = "answer"  # the gold answer's field; null for tasks judged by tests only (code)
    version: int | str = 1
    description: str = ""
    homepage: str | None = None
    id_field: str | None = "id"  # None: the row index is the id
    fields: dict[str, list[str]] = {}  # canonical name -> aliases (first non-null wins; one string for one)
    adapter: str | None = None  # named row transform in sapo_vl.evaluation.adapters.ADAPTERS
    official: str | None = None  # the benchmark's own metric (OFFICIAL name, or "pass@1"), reported first
    images: list[str] | None = None  # fields holding images; default: none, a registered dataset's "images"
    generation: GenerationSpec = GenerationSpec()
    k: list[PositiveInt] = Field([1], min_length=1)  # pass@k values (one number for one)
    exports: list[Literal["humaneval", "evalplus"]] = []
    fixture: str | None = None  # tiny fixture in the release layout (relative to the YAML file)
    path: Path | None = None  # the YAML file this spec came from (set by load_task_file)

    _one_or_many = field_validator("images", "exports", "k", mode="before")(_as_list)

    @field_validator("prompt", mode="before")
    @classmethod
    def _template_shorthand(cls, value: Any) -> Any:
        return {"template": value} if isinstance(value, str) else value

    @field_validator("fields", mode="before")
    @classmethod
    def _alias_shorthand(cls, value: Any) -> Any:
        return {k: _as_list(v) for k, v in value.items()} if isinstance(value, dict) else value

    def to_config(self) -> dict[str, Any]:
        """A JSON-able view of the spec, for the results file's ``configs``."""
        return self.model_dump(mode="json")


def parse_task(raw: Any, path: Path | None = None) -> TaskSpec:
    """Validate a parsed YAML mapping into a :class:`TaskSpec`; errors name the file and the key."""
    where = str(path) if path else "<task>"
    if isinstance(raw, dict) and "path" in raw:
        raise TaskSpecError(f"{where}: unknown key(s) path (a task's data path is source.path)")
    spec = validated(TaskSpec, {**raw, "path": path} if isinstance(raw, dict) else raw, where, TaskSpecError)
    if spec.adapter is not None:
        ADAPTERS.check(spec.adapter, f"{where}: adapter")
    if spec.official not in (None, VERIFIER_IS_OFFICIAL):
        OFFICIAL.check(spec.official, f"{where}: official")
    return spec


def load_task_file(path: str | Path) -> TaskSpec:
    path = Path(path).resolve()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise TaskSpecError(f"task file {path} does not exist") from exc
    except yaml.YAMLError as exc:
        raise TaskSpecError(f"{path}: invalid YAML: {' '.join(str(exc).split())}") from exc
    return parse_task(raw, path)


# ------------------------------------------------------------------------------------------------ the registry

TASKS = Registry("eval task")  # name -> () -> TaskSpec: the task files (available_tasks) and plug-ins' own


def _walk_up_eval_dirs(start: Path) -> list[Path]:
    return [d / "eval" for d in (start, *start.parents) if (d / "eval").is_dir()]


def task_dirs() -> list[Path]:
    """Directories searched for ``<name>.yaml``, in priority order (see the module docstring)."""
    dirs = [Path(os.environ["SAPO_VL_EVAL_DIR"])] if os.environ.get("SAPO_VL_EVAL_DIR") else []
    dirs += _walk_up_eval_dirs(Path.cwd().resolve()) + _walk_up_eval_dirs(Path(__file__).resolve().parent)
    unique: dict[Path, Path] = {}
    for d in [*dirs, BUILTIN_DIR]:
        unique.setdefault(d.resolve(), d)
    return list(unique.values())


def task_file(loader: Any) -> Path | None:
    """The YAML file a registered task reads, or None (a plug-in's own)."""
    is_file = isinstance(loader, functools.partial) and loader.func is load_task_file
    return loader.args[0] if is_file else None


def available_tasks() -> Registry:
    """``TASKS`` with the task files re-read from :func:`task_dirs` (they depend on the working directory and
    ``$SAPO_VL_EVAL_DIR``); the first directory wins, a plug-in's task over a file of the same name."""
    for name in [n for n, loader in TASKS.items() if task_file(loader)]:
        del TASKS[name]
    plugins = set(TASKS)
    for d in reversed(task_dirs()):
        for file in sorted(d.glob("*.yaml")):
            if file.stem not in plugins:
                TASKS[file.stem] = functools.partial(load_task_file, file)
    return TASKS


def resolve_task(name_or_path: str) -> TaskSpec:
    """Load a task by name (see :func:`task_dirs`) or by path to a YAML file."""
    if Path(name_or_path).suffix in (".yaml", ".yml") or os.sep in name_or_path:
        return load_task_file(name_or_path)
    return available_tasks()[name_or_path]()


# ------------------------------------------------------------------------------------------- rows -> records


def resolve_data_path(spec: TaskSpec, override: str | None = None) -> Path:
    """The task's data path: ``override`` (``--data-path``), then ``$env``, then ``source.path``."""
    src = spec.source
    if override:
        return Path(override).expanduser().resolve()
    if src.env and os.environ.get(src.env):
        return Path(os.environ[src.env]).expanduser().resolve()
    if src.path:
        base = spec.path.parent if spec.path else Path.cwd()
        path = (base / Path(src.path).expanduser()).resolve()
        if path.exists():
            return path
    where = f"--data-path {spec.name}=PATH" + (f" or ${src.env}" if src.env else "")
    hint = f" {src.hint.strip()}" if src.hint else ""
    raise TaskDataError(f"task {spec.name!r}: no local data found (source.path={src.path!r}). Set {where}.{hint}")


def _canonicalise(row: dict[str, Any], aliases: dict[str, list[str]]) -> dict[str, Any]:
    row = dict(row)
    for name, names in aliases.items():
        row[name] = next((row[a] for a in names if row.get(a) is not None), row.get(name))
    return row


def _prompt(spec: TaskSpec, row: dict[str, Any], where: str) -> Any:
    template = spec.prompt.template or ("{prompt}" if spec.source.type == "registered" else "{question}")
    try:
        if template == "{prompt}" and not isinstance(row.get("prompt"), str) and "prompt" in row:
            prompt = row["prompt"]  # a registered dataset's chat messages, as they are
        else:
            prompt = render_template(template, row)
        if not spec.prompt.system:
            return prompt
        system = {"role": "system", "content": render_template(spec.prompt.system, row)}
    except KeyError as exc:
        raise TaskDataError(f"{where}: prompt template: {exc.args[0]}") from None
    return [system, *(prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}])]


def task_row(spec: TaskSpec, row: dict[str, Any], index: int) -> dict[str, Any]:
    """One benchmark row -> a record-shaped row (the ``sapo_vl.data`` keys plus the verifier's columns), which
    ``normalize_record`` then checks like any other."""
    row = _canonicalise(row, spec.fields)
    if spec.id_field is not None and row.get(spec.id_field) is None:
        raise TaskDataError(f"task {spec.name} row {index}: id field {spec.id_field!r} missing "
                            f"(fields: {sorted(row)})")
    doc_id = str(index) if spec.id_field is None else str(row[spec.id_field])
    where = f"task {spec.name} doc {doc_id}"
    if spec.adapter:
        row = ADAPTERS[spec.adapter](row, where)
    if spec.answer is not None and spec.answer not in row:
        raise TaskDataError(f"{where}: answer field {spec.answer!r} missing (fields: {sorted(row)})")
    image_fields = spec.images if spec.images is not None else (["images"] if spec.source.type == "registered" else [])
    out = {
        "id": doc_id,
        "prompt": _prompt(spec, row, where),
        "images": [img for f in image_fields for img in as_image_list(row.get(f))],
        "answer": None if spec.answer is None else row[spec.answer],
        "reward": row.get("reward") or spec.verifier.name,
        "meta": {"task": spec.name, "index": index, **(row.get("meta") or {})},
    }
    for column, source_field in spec.verifier.columns.items():
        if source_field not in row:
            raise TaskDataError(f"{where}: verifier column {column!r} reads field {source_field!r}, "
                                f"which the row lacks (fields: {sorted(row)})")
        out[column] = row[source_field]
    return out


def load_task_records(spec: TaskSpec, data_path: str | None = None, limit: int | None = None) -> Records:
    """The task's records (its first ``limit`` docs), read and normalised by ``sapo_vl.data``; images are checked
    but decoded later (``decode_images``), chunk by chunk. ``result.report.total`` is the size of the split."""
    src = spec.source
    record_spec = RecordSpec(dataset=spec.name, require_answer=False, decode_images=False,
                             transform=lambda row, index: task_row(spec, row, index))
    try:
        if src.type == "registered":
            rows = load_dataset_by_name(src.name, split=src.split or "test", **src.kwargs)
            return load_records(rows, record_spec, limit=limit)
        path = resolve_data_path(spec, data_path)
        if src.image_root:
            record_spec = replace(record_spec, base_dir=(path if path.is_dir() else path.parent) / src.image_root)
        return load_records(path, record_spec, format=None if src.type == "auto" else src.type, split=src.split,
                            limit=limit)
    except UserError as exc:  # a missing file, an unknown dataset, a bad row: say which task
        if isinstance(exc, TaskDataError):
            raise
        raise TaskDataError(f"task {spec.name}: {exc}") from exc
