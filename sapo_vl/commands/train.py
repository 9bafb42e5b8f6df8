"""``sapo-vl train RECIPE.yaml [--import MODULE ...] [dotted.key=value ...]``: load the recipe, run the loop in
``sapo_vl.train``."""

from __future__ import annotations

import os

from sapo_vl import train
from sapo_vl.config import describe_config, load_config
from sapo_vl.plugins import import_plugins, load_entry_points, split_imports


def main(argv: list[str]) -> int:
    argv, imports = split_imports(argv)
    if not argv or argv[0] in ("-h", "--help"):
        load_entry_points()
        import_plugins(imports)
        print("usage: sapo-vl train RECIPE.yaml [--import MODULE ...] [dotted.key=value ...]\n\n" + train.__doc__
              + "\nconfig keys (default values and allowed values; a recipe or key=value overrides them):\n"
              + "\n".join(describe_config()))
        return 0
    cfg = load_config(argv[0], argv[1:], imports)
    if cfg.model.path == "tiny":  # everything is built locally: never ask the hub
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    train.run(cfg)
    return 0
