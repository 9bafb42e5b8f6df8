"""The ``sapo-vl`` command: one entry point, each subcommand a module of this package.

    sapo-vl train RECIPE.yaml [--import M] [dotted.key=value ...]   (also under ``accelerate launch``)
    sapo-vl eval ...                                                (``sapo-vl eval --help``)
    sapo-vl data inspect SOURCE [--import M] [key=value ...]        (``sapo-vl data --help``)
    sapo-vl plan RECIPE.yaml [--gpus N] [--gpu h100|h200|...] [--accelerate-config FILE]   (memory per GPU, by phase)
    sapo-vl export RUN_OR_CHECKPOINT OUT_DIR [--dtype D]                 (a Hugging Face model directory)
    sapo-vl make-tiny-model OUT_DIR [--dense] [--seed N] [--hidden-size H] [--layers L] [--intermediate-size I]
    sapo-vl plot RUN_DIR [RUN_DIR ...]

Plug-ins registered by the entry-point group ``sapo_vl.plugins`` are imported first. A ``UserError`` (a wrong
recipe key, name, path or data row) or an ``OSError`` (a missing path, a permission, a full disk) is printed as one
line and exits 2; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass

from sapo_vl import __version__
from sapo_vl.errors import UserError
from sapo_vl.plugins import load_entry_points
from sapo_vl.registry import Registry


@dataclass(frozen=True)
class Command:
    """A subcommand: ``sapo_vl.commands.<module>.main(argv)``, imported only when run."""

    module: str
    help: str

    def __call__(self, argv: list[str]) -> int:
        return importlib.import_module(f"sapo_vl.commands.{self.module}").main(argv)


COMMANDS = Registry("command", {
    "train": Command("train", "train a policy from a YAML recipe with dotted overrides"),
    "eval": Command("eval", "score benchmarks (Pass@1, pass@k) from a model or samples file"),
    "data": Command("data_inspect", "inspect a dataset before training on it (sapo-vl data inspect)"),
    "plan": Command("plan", "memory per GPU of a recipe, by phase, from the model's config.json"),
    "export": Command("export", "write a run's checkpoint as a Hugging Face model (safetensors)"),
    "make-tiny-model": Command("make_tiny_model", "build the offline tiny Qwen3-VL(-MoE) checkpoint"),
    "plot": Command("plot", "draw PNG curves from RUN_DIR/metrics.jsonl"),
})


def _usage() -> str:
    lines = ["usage: sapo-vl COMMAND [ARGS ...]", "", "commands:"]
    lines += [f"  {name:<16} {command.help}" for name, command in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    try:
        command = COMMANDS[name]
    except UserError as err:
        print(f"sapo-vl: error: {err}\n\n{_usage()}", file=sys.stderr)
        return 2
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        load_entry_points()
        result = command(rest)
    except (UserError, OSError) as err:  # OSError: a path, a permission, a full disk: the user's to fix
        print(f"sapo-vl {name}: error: {err}", file=sys.stderr)
        return 2
    return int(result or 0)
