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

Task names resolve to ``<name>.yaml`` in, in order: ``$SAPO_VL_EVAL_DIR``, an ``eval/`` directory found walking
up from the current directory, one found walking up from this package (an editable install), and the tasks
bundled in the package (``sapo_vl/evaluation/builtin_tasks/``, the offline tasks).
Any path to a ``.yaml`` file works too.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from sapo_vl.data import Records, RecordSpec, load_dataset_by_name, load_records, render_template
from sapo_vl.data.images import as_image_list
from sapo_vl.data.records import RESERVED_KEYS
from sapo_vl.errors import UserError
from sapo_vl.evaluation.adapters import ADAPTERS, TaskDataError
from sapo_vl.evaluation.official import OFFICIAL

VERIFIER_IS_OFFICIAL = "pass@1"  # `official: pass@1`: the verifier's verdict is the benchmark's definition (code)

BUILTIN_DIR = Path(__file__).parent / "builtin_tasks"


class TaskSpecError(UserError, ValueError):
    """A task YAML file is malformed: names the file and the key."""


SOURCE_TYPES = ("auto", "jsonl", "json", "parquet", "disk", "registered")


@dataclass
class SourceSpec:
    type: str = "auto"  # auto | jsonl | json | parquet | disk | registered
    path: str | None = None  # default data path (relative to the YAML file)
    env: str | None = None  # environment variable holding the data path
    name: str | None = None  # a dataset registered in sapo_vl.data.DATASETS (type: registered)
    kwargs: dict[str, Any] = field(default_factory=dict)  # options of the registered dataset's builder
    split: str | None = None
    image_root: str | None = None  # where relative image paths point, relative to the data root
    hint: str | None = None  # where to get the data, shown when it is missing


@dataclass
class PromptSpec:
    template: str | None = None  # default: "{question}"; a registered dataset's prompt as it is
    system: str | None = None


@dataclass
class VerifierSpec:
    name: str = "math"  # a sapo_vl.rewards.REWARDS key; rows may override it through a "reward" field
    kwargs: dict[str, Any] = field(default_factory=dict)  # constant keyword arguments to the reward function
    columns: dict[str, str] = field(default_factory=dict)  # reward-function column -> row field
    threshold: float = 1.0  # a completion is correct when its reward >= threshold


@dataclass
class GenerationSpec:
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    max_new_tokens: int = 512
    min_pixels: int | None = None
    max_pixels: int | None = None
    seed: int | None = 0


@dataclass
class TaskSpec:
    name: str
    source: SourceSpec
    prompt: PromptSpec
    verifier: VerifierSpec
    answer: str | None = "answer"  # the gold answer's field; null for tasks judged by tests only (code)
    version: int | str = 1
    description: str = ""
    homepage: str | None = None
    id_field: str | None = "id"  # None: the row index is the id
    fields: dict[str, list[str]] = field(default_factory=dict)  # canonical name -> aliases (first non-null wins)
    adapter: str | None = None  # named row transform in sapo_vl.evaluation.adapters.ADAPTERS
    official: str | None = None  # the benchmark's own metric (OFFICIAL name, or "pass@1"), reported first
    images: list[str] | None = None  # fields holding images; default: none, a registered dataset's "images"
    generation: GenerationSpec = field(default_factory=GenerationSpec)
    k: list[int] = field(default_factory=lambda: [1])
    exports: list[str] = field(default_factory=list)  # "humaneval", "evalplus"
    fixture: str | None = None  # tiny fixture in the release layout (relative to the YAML file)
    path: Path | None = None  # the YAML file this spec came from

    def to_config(self) -> dict[str, Any]:
        """A JSON-able view of the spec, for the results file's ``configs``."""
        out = dataclasses.asdict(self)
        out["path"] = str(self.path) if self.path else None
        return out


# ------------------------------------------------------------------------------------------------ validation

_SECTIONS = {"source": SourceSpec, "prompt": PromptSpec, "verifier": VerifierSpec, "generation": GenerationSpec}
_TOP_KEYS = {f.name for f in dataclasses.fields(TaskSpec)} - {"path"}
_REQUIRED = ("name", "source", "verifier")
_EXPORTS = ("humaneval", "evalplus")


def _check_type(where: str, value: Any, types: tuple, what: str) -> None:
    if isinstance(value, bool) and bool not in types:
        raise TaskSpecError(f"{where}: expected {what}, got {value!r}")
    if not isinstance(value, types):
        raise TaskSpecError(f"{where}: expected {what}, got {type(value).__name__} {value!r}")


def _section(where: str, cls: type, raw: Any) -> Any:
    if raw is None:
        return cls()
    _check_type(where, raw, (dict,), "a mapping")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise TaskSpecError(f"{where}: unknown keys {unknown}; allowed: {sorted(known)}")
    types = {"str": (str,), "int": (int,), "float": (int, float), "dict": (dict,), "bool": (bool,)}
    for key, value in raw.items():
        ann = str(known[key].type)
        if value is None and "None" in ann:
            continue
        base = ann.split("|")[0].split("[")[0].strip()
        _check_type(f"{where}.{key}", value, types[base], f"a {base}")
    return cls(**raw)


def _str_list(where: str, raw: Any) -> list[str]:
    if isinstance(raw, str):
        return [raw]
    _check_type(where, raw, (list,), "a string or a list of strings")
    for i, item in enumerate(raw):
        _check_type(f"{where}[{i}]", item, (str,), "a string")
    return list(raw)


def _validate_top(where: str, raw: dict) -> None:
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise TaskSpecError(f"{where}: unknown keys {unknown}; allowed: {sorted(_TOP_KEYS)}")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise TaskSpecError(f"{where}: missing required keys {missing}")
    _check_type(f"{where}: name", raw["name"], (str,), "a string")
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", raw["name"]):
        raise TaskSpecError(f"{where}: name {raw['name']!r} may only hold letters, digits, '_', '-', '.'")
    if raw.get("answer") is not None:
        _check_type(f"{where}: answer", raw["answer"], (str,), "a field name or null")


def _validate_semantics(where: str, spec: TaskSpec) -> None:
    src = spec.source
    if src.type not in SOURCE_TYPES:
        raise TaskSpecError(f"{where}: source.type {src.type!r} is not one of {'/'.join(SOURCE_TYPES)}")
    if src.type == "registered" and not src.name:
        raise TaskSpecError(f"{where}: source.name (a registered dataset) is required when source.type is "
                            "'registered'")
    if spec.adapter is not None:
        ADAPTERS.check(spec.adapter, f"{where}: adapter")
    if spec.official not in (None, VERIFIER_IS_OFFICIAL):
        OFFICIAL.check(spec.official, f"{where}: official")
    if not spec.k or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in spec.k):
        raise TaskSpecError(f"{where}: k must be a non-empty list of integers >= 1, got {spec.k!r}")
    problem = generation_problem(spec.generation)
    if problem:
        raise TaskSpecError(f"{where}: generation: {problem}")
    clash = sorted(set(spec.verifier.columns) & set(RESERVED_KEYS))
    if clash:
        raise TaskSpecError(f"{where}: verifier.columns {clash} clash with record keys {RESERVED_KEYS}")
    bad = sorted(set(spec.exports) - set(_EXPORTS))
    if bad:
        raise TaskSpecError(f"{where}: exports {bad} unknown; allowed: {list(_EXPORTS)}")


def generation_problem(gen: GenerationSpec) -> str | None:
    """What is wrong with generation settings, or None."""
    if gen.n < 1 or gen.max_new_tokens < 1 or gen.top_k < 0:
        return f"need n >= 1, max_new_tokens >= 1, top_k >= 0; got n={gen.n}, " \
               f"max_new_tokens={gen.max_new_tokens}, top_k={gen.top_k}"
    if not 0 < gen.top_p <= 1 or gen.temperature < 0:
        return f"need 0 < top_p <= 1 and temperature >= 0; got top_p={gen.top_p}, temperature={gen.temperature}"
    return None


def parse_task(raw: Any, path: Path | None = None) -> TaskSpec:
    """Validate a parsed YAML mapping into a :class:`TaskSpec`; errors name the file and the key."""
    where = str(path) if path else "<task>"
    _check_type(where, raw, (dict,), "a mapping at the top level")
    source = raw.get("source")
    if isinstance(source, dict) and source.get("type") in ("pip", "hf_disk"):  # the names of task version 1
        raise TaskSpecError(f"{where}: source.type {source['type']!r} was renamed: use "
                            + ("{type: registered, name: <dataset>}" if source["type"] == "pip" else "'disk'"))
    _validate_top(where, raw)
    if isinstance(raw.get("prompt"), str):  # shorthand: prompt: "template"
        raw = {**raw, "prompt": {"template": raw["prompt"]}}
    kwargs: dict[str, Any] = {k: v for k, v in raw.items() if k not in _SECTIONS}
    for key, cls in _SECTIONS.items():
        kwargs[key] = _section(f"{where}: {key}", cls, raw.get(key))
    if raw.get("images") is not None:
        kwargs["images"] = _str_list(f"{where}: images", raw["images"])
    kwargs["exports"] = _str_list(f"{where}: exports", raw.get("exports") or [])
    kwargs["k"] = raw.get("k", [1]) if not isinstance(raw.get("k"), int) else [raw["k"]]
    fields_raw = raw.get("fields") or {}
    _check_type(f"{where}: fields", fields_raw, (dict,), "a mapping of name -> aliases")
    kwargs["fields"] = {name: _str_list(f"{where}: fields.{name}", al) for name, al in fields_raw.items()}
    for key in ("version",):
        if key in raw:
            _check_type(f"{where}: {key}", raw[key], (int, str), "an int or a string")
    for key in ("description", "homepage", "adapter", "fixture", "id_field", "official"):
        if raw.get(key) is not None:
            _check_type(f"{where}: {key}", raw[key], (str,), "a string")
    spec = TaskSpec(**kwargs, path=path)
    _validate_semantics(where, spec)
    return spec


def load_task_file(path: str | Path) -> TaskSpec:
    path = Path(path).resolve()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise TaskSpecError(f"task file {path} does not exist") from exc
    except yaml.YAMLError as exc:
        raise TaskSpecError(f"{path}: invalid YAML: {exc}") from exc
    return parse_task(raw, path)


# ------------------------------------------------------------------------------------------------ resolution


def _walk_up_eval_dirs(start: Path) -> list[Path]:
    return [d / "eval" for d in (start, *start.parents) if (d / "eval").is_dir()]


def task_dirs() -> list[Path]:
    """Directories searched for ``<name>.yaml``, in priority order (see the module docstring)."""
    dirs: list[Path] = []
    if os.environ.get("SAPO_VL_EVAL_DIR"):
        dirs.append(Path(os.environ["SAPO_VL_EVAL_DIR"]))
    dirs += _walk_up_eval_dirs(Path.cwd().resolve())
    dirs += _walk_up_eval_dirs(Path(__file__).resolve().parent)
    dirs.append(BUILTIN_DIR)
    seen, unique = set(), []
    for d in dirs:
        if d.resolve() not in seen:
            seen.add(d.resolve())
            unique.append(d)
    return unique


def available_tasks() -> dict[str, Path]:
    """Task name -> YAML path, first directory in :func:`task_dirs` wins."""
    found: dict[str, Path] = {}
    for d in task_dirs():
        for file in sorted(d.glob("*.yaml")):
            found.setdefault(file.stem, file)
    return found


def resolve_task(name_or_path: str) -> TaskSpec:
    """Load a task by name (see :func:`task_dirs`) or by path to a YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or os.sep in name_or_path:
        return load_task_file(candidate)
    tasks = available_tasks()
    if name_or_path not in tasks:
        raise TaskSpecError(f"unknown task {name_or_path!r}; available: {sorted(tasks)} "
                            f"(searched {[str(d) for d in task_dirs()]}); or pass a path to a YAML file")
    return load_task_file(tasks[name_or_path])


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
