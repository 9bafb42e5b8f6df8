"""Declarative evaluation tasks: the YAML schema (``TaskSpec``), its validation, name resolution, and turning
a benchmark's rows into records (``id``, ``prompt``, ``images``, ``answer``, ``reward``, ``meta`` and the
verifier's extra columns) -- the same record layout as ``sapo_vl.data``, so rollout code and verifiers are shared
with training.

A task file (see ``eval/README.md`` for the full schema)::

    name: easy_vqa
    version: 1
    source: {type: pip, loader: easy_vqa, split: test}
    prompt: {template: "{question}\\nAnswer with one word.", system: null}
    images: [image]
    answer: answer
    verifier: {name: vqa, kwargs: {}, columns: {}, threshold: 1.0}
    generation: {n: 1, temperature: 0.0, top_p: 1.0, max_new_tokens: 32}
    k: [1]

Task names resolve to ``<name>.yaml`` in, in order: ``$SAPO_VL_EVAL_DIR``, an ``eval/`` directory found walking
up from the current directory, one found walking up from this package (an editable install), and the tasks
bundled in the package (``sapo_vl/evaluation/builtin_tasks/``, the offline HumanEval and easy-VQA).
Any path to a ``.yaml`` file works too.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sapo_vl.evaluation.adapters import ADAPTERS
from sapo_vl.evaluation.sources import RowSource, TaskDataError, file_source, pip_source

BUILTIN_DIR = Path(__file__).parent / "builtin_tasks"
RESERVED = ("id", "prompt", "images", "answer", "reward", "meta")


class TaskSpecError(ValueError):
    """A task YAML file is malformed: names the file and the key."""


@dataclass
class SourceSpec:
    type: str = "auto"  # auto | jsonl | json | parquet | hf_disk | pip
    path: str | None = None  # default data path (relative to the YAML file)
    env: str | None = None  # environment variable holding the data path
    loader: str | None = None  # pip loader name (type: pip)
    split: str | None = None
    image_root: str | None = None  # where relative image paths point, relative to the data root
    hint: str | None = None  # where to get the data, shown when it is missing


@dataclass
class PromptSpec:
    template: str = "{question}"
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
    answer: str | None  # the gold answer's field; null for tasks judged by tests only (code)
    verifier: VerifierSpec
    version: int | str = 1
    description: str = ""
    homepage: str | None = None
    id_field: str | None = "id"  # None: the row index is the id
    fields: dict[str, list[str]] = field(default_factory=dict)  # canonical name -> aliases (first non-null wins)
    adapter: str | None = None  # named row transform in sapo_vl.evaluation.adapters.ADAPTERS
    images: list[str] = field(default_factory=list)
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
_REQUIRED = ("name", "source", "answer", "verifier")
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
    if raw["answer"] is not None:
        _check_type(f"{where}: answer", raw["answer"], (str,), "a field name or null")


def _validate_semantics(where: str, spec: TaskSpec) -> None:
    src = spec.source
    if src.type == "pip" and not src.loader:
        raise TaskSpecError(f"{where}: source.loader is required when source.type is 'pip'")
    if src.type not in ("auto", "jsonl", "json", "parquet", "hf_disk", "pip"):
        raise TaskSpecError(f"{where}: source.type {src.type!r} is not one of auto/jsonl/json/parquet/hf_disk/pip")
    if spec.adapter is not None and spec.adapter not in ADAPTERS:
        raise TaskSpecError(f"{where}: adapter {spec.adapter!r} unknown; known: {sorted(ADAPTERS)}")
    if not spec.k or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in spec.k):
        raise TaskSpecError(f"{where}: k must be a non-empty list of integers >= 1, got {spec.k!r}")
    problem = generation_problem(spec.generation)
    if problem:
        raise TaskSpecError(f"{where}: generation: {problem}")
    clash = sorted(set(spec.verifier.columns) & set(RESERVED))
    if clash:
        raise TaskSpecError(f"{where}: verifier.columns {clash} clash with record keys {RESERVED}")
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
    _validate_top(where, raw)
    if isinstance(raw.get("prompt"), str):  # shorthand: prompt: "template"
        raw = {**raw, "prompt": {"template": raw["prompt"]}}
    kwargs: dict[str, Any] = {k: v for k, v in raw.items() if k not in _SECTIONS}
    for key, cls in _SECTIONS.items():
        kwargs[key] = _section(f"{where}: {key}", cls, raw.get(key))
    kwargs["images"] = _str_list(f"{where}: images", raw.get("images") or [])
    kwargs["exports"] = _str_list(f"{where}: exports", raw.get("exports") or [])
    kwargs["k"] = raw.get("k", [1]) if not isinstance(raw.get("k"), int) else [raw["k"]]
    fields_raw = raw.get("fields") or {}
    _check_type(f"{where}: fields", fields_raw, (dict,), "a mapping of name -> aliases")
    kwargs["fields"] = {name: _str_list(f"{where}: fields.{name}", al) for name, al in fields_raw.items()}
    for key in ("version",):
        if key in raw:
            _check_type(f"{where}: {key}", raw[key], (int, str), "an int or a string")
    for key in ("description", "homepage", "adapter", "fixture", "id_field"):
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


def open_source(spec: TaskSpec, data_path: str | None = None) -> RowSource:
    if spec.source.type == "pip":
        return pip_source(spec.source.loader, spec.source.split)
    return file_source(resolve_data_path(spec, data_path), spec.source.type, spec.source.split)


_BLANK_RUN = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")  # 3+ line breaks left by empty fields -> one blank line
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


def render_template(template: str, row: dict[str, Any], where: str) -> str:
    """Fill ``{field}`` placeholders from the row; ``{{`` / ``}}`` give literal braces; other braces stay
    (so ``\\boxed{}`` needs no escaping). Runs of blank lines left by empty fields collapse to one; the result
    is stripped."""

    def sub(match: re.Match) -> str:
        name = match.group(1)
        if name is None:
            return match.group(0)[0]
        if name not in row:
            raise TaskDataError(f"{where}: prompt template uses {{{name}}} but the row has no field {name!r} "
                                f"(fields: {sorted(row)})")
        value = row[name]
        return "" if value is None else str(value)

    text = _PLACEHOLDER.sub(sub, template)
    return _BLANK_RUN.sub("\n\n", text).strip()


def _image_items(value: Any, root: Path | None, where: str) -> list[Any]:
    """Normalise one image field into a list of path strings / bytes / PIL images / data URIs."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [img for v in value for img in _image_items(v, root, where)]
    if isinstance(value, dict):
        if value.get("bytes"):
            return [value["bytes"]]
        if value.get("path"):
            return _image_items(value["path"], root, where)
        raise TaskDataError(f"{where}: image dict has neither 'bytes' nor 'path': keys {sorted(value)}")
    if isinstance(value, bytes):
        return [value]
    if isinstance(value, str):
        if value.startswith(("data:", "http://", "https://")):
            return [value]
        path = Path(value).expanduser()
        if not path.is_absolute() and root is not None:
            path = root / path
        if not path.exists():
            raise TaskDataError(f"{where}: image file {path} does not exist")
        return [str(path)]
    if hasattr(value, "size") and hasattr(value, "mode"):  # PIL.Image
        return [value]
    raise TaskDataError(f"{where}: unsupported image value of type {type(value).__name__}")


def _canonicalise(row: dict[str, Any], aliases: dict[str, list[str]]) -> dict[str, Any]:
    row = dict(row)
    for name, names in aliases.items():
        row[name] = next((row[a] for a in names if row.get(a) is not None), row.get(name))
    return row


def build_record(spec: TaskSpec, row: dict[str, Any], index: int, image_root: Path | None) -> dict[str, Any]:
    """One benchmark row -> one record (the ``sapo_vl.data`` layout plus the verifier's columns)."""
    row = _canonicalise(row, spec.fields)
    if spec.id_field is None:
        doc_id = str(index)
    elif row.get(spec.id_field) is None:
        raise TaskDataError(f"task {spec.name} row {index}: id field {spec.id_field!r} missing "
                            f"(fields: {sorted(row)})")
    else:
        doc_id = str(row[spec.id_field])
    where = f"task {spec.name} doc {doc_id}"
    if spec.adapter:
        row = ADAPTERS[spec.adapter](row, where)
    if spec.answer is not None and spec.answer not in row:
        raise TaskDataError(f"{where}: answer field {spec.answer!r} missing (fields: {sorted(row)})")
    text = render_template(spec.prompt.template, row, where)
    prompt: Any = text
    if spec.prompt.system:
        system = render_template(spec.prompt.system, row, where)
        prompt = [{"role": "system", "content": system}, {"role": "user", "content": text}]
    images = [img for f in spec.images for img in _image_items(row.get(f), image_root, f"{where} field {f!r}")]
    record = {
        "id": doc_id,
        "prompt": prompt,
        "images": images,
        "answer": None if spec.answer is None else row[spec.answer],
        "reward": row.get("reward") or spec.verifier.name,
        "meta": {"task": spec.name, "index": index, **(row.get("meta") or {})},
    }
    for column, source_field in spec.verifier.columns.items():
        if source_field not in row:
            raise TaskDataError(f"{where}: verifier column {column!r} reads field {source_field!r}, "
                                f"which the row lacks (fields: {sorted(row)})")
        record[column] = row[source_field]
    return record


def load_records(spec: TaskSpec, data_path: str | None = None, limit: int | None = None
                 ) -> tuple[list[dict[str, Any]], int]:
    """The task's records (first ``limit`` rows) and the size of the full split."""
    source = open_source(spec, data_path)
    root = source.root
    if spec.source.image_root:
        root = (root or Path.cwd()) / spec.source.image_root
    records = [build_record(spec, row, i, root) for i, row in enumerate(source.rows(limit))]
    seen: set[str] = set()
    for rec in records:
        if rec["id"] in seen:
            raise TaskDataError(f"task {spec.name}: duplicate doc id {rec['id']!r} (id_field={spec.id_field!r})")
        seen.add(rec["id"])
    return records, len(source)
