"""The ``sapo-vl`` command: one entry point, each subcommand lives in its own module.

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

# subcommand -> (module, function taking argv, one-line help)
COMMANDS = {
    "train": ("sapo_vl.train", "cli_main", "train a policy from a YAML recipe with dotted overrides"),
    "eval": ("sapo_vl.evaluation.cli", "main", "score benchmarks (Pass@1, pass@k) from a model or samples file"),
    "data": ("sapo_vl.data.inspect", "cli_main", "inspect a dataset before training on it (sapo-vl data inspect)"),
    "plan": ("sapo_vl.plan", "cli_main", "memory per GPU of a recipe, by phase, from the model's config.json"),
    "export": ("sapo_vl.export", "cli_main", "write a run's checkpoint as a Hugging Face model (safetensors)"),
    "make-tiny-model": ("sapo_vl.models.tiny", "cli_main", "build the offline tiny Qwen3-VL(-MoE) checkpoint"),
    "plot": ("sapo_vl.plots", "cli_main", "draw PNG curves from RUN_DIR/metrics.jsonl"),
}


def _usage() -> str:
    lines = ["usage: sapo-vl COMMAND [ARGS ...]", "", "commands:"]
    lines += [f"  {name:<16} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        from sapo_vl import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"sapo-vl: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from sapo_vl.errors import UserError
    from sapo_vl.plugins import load_entry_points

    module, func, _ = COMMANDS[name]
    try:
        load_entry_points()
        result = getattr(importlib.import_module(module), func)(rest)
    except (UserError, OSError) as err:  # OSError: a path, a permission, a full disk: the user's to fix
        print(f"sapo-vl {name}: error: {err}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
