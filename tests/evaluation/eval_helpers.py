"""Helpers shared by the evaluation tests (a distinct module name: other test folders have a conftest too)."""

import json
from pathlib import Path

EVAL_DIR = Path(__file__).resolve().parents[2] / "eval"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
