"""Plug-ins: user modules imported before any name is resolved, so what they register is usable from the CLI.

Three ways in, all importing a module whose top level registers things (``DATASETS.register``,
``register_reward``, ...):

- a recipe's top-level ``imports: [my_pkg.plugin, ./local_plugin.py]`` (relative paths and bare module names
  resolve against the recipe's folder first, then the working directory);
- ``--import MODULE`` (repeatable) on ``sapo-vl train``, ``sapo-vl eval`` and ``sapo-vl data``;
- the entry-point group ``sapo_vl.plugins`` of any installed distribution, imported at CLI start::

      [project.entry-points."sapo_vl.plugins"]
      my_datasets = "my_pkg.plugin"          # a module: imported
      my_rewards = "my_pkg.hooks:register"   # a callable: called with no arguments

A module that is not there is a ``PluginError`` (one line, exit 2). An exception raised inside a plug-in's own
code is its bug: it keeps its traceback, with a note naming the plug-in.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterable
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

from sapo_vl.errors import PluginError

ENTRY_POINT_GROUP = "sapo_vl.plugins"
_entry_points_loaded = False


def load_entry_points() -> list[str]:
    """Import every ``sapo_vl.plugins`` entry point once per process; returns their names."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return []
    _entry_points_loaded = True
    names = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        where = f"entry point {ep.name!r} = {ep.value!r} (group {ENTRY_POINT_GROUP})"
        obj = _guarded(lambda ep=ep: ep.load(), ep.value.split(":")[0], where)
        if callable(obj) and not isinstance(obj, ModuleType):
            _guarded(obj, None, where)
        names.append(ep.name)
    return names


def import_plugins(modules: Iterable[str], base_dir: str | Path | None = None) -> list[ModuleType]:
    """Import each module (a dotted name or a ``.py`` path); returns the modules. ``base_dir`` (a recipe's
    folder) is searched before the working directory."""
    out = []
    for name in modules:
        if not isinstance(name, str) or not name.strip():
            raise PluginError(f"plug-in import {name!r}: expected a module name or a .py path")
        out.append(_import_one(name.strip(), Path(base_dir) if base_dir else None))
    return out


def _import_one(name: str, base_dir: Path | None) -> ModuleType:
    where = f"plug-in {name!r}"
    if name.endswith(".py") or "/" in name or "\\" in name:
        candidates = [Path(name)] if Path(name).is_absolute() else \
            [d / name for d in (base_dir, Path.cwd()) if d is not None]
        path = next((p.resolve() for p in candidates if p.is_file()), None)
        if path is None:
            raise PluginError(f"{where}: file not found (looked in {', '.join(str(p) for p in candidates)})")
        module_name = path.stem  # the name `imports: [stem]` would give it: imported once either way
        if module_name in sys.modules:
            loaded = getattr(sys.modules[module_name], "__file__", None)
            if loaded and Path(loaded).resolve() == path:
                return sys.modules[module_name]
            raise PluginError(f"{where}: another module named {module_name!r} is already imported ({loaded})")
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            _guarded(lambda: spec.loader.exec_module(module), None, where)
        except BaseException:
            sys.modules.pop(module_name, None)
            raise
        return module
    for folder in (base_dir, Path.cwd()):  # a module next to the recipe, or in the working directory
        if folder is not None and str(folder.resolve()) not in sys.path:
            sys.path.append(str(folder.resolve()))
    return _guarded(lambda: importlib.import_module(name), name, where)


def _guarded(call, module: str | None, where: str):
    """Run ``call``; a missing ``module`` (or one of its parents) is a PluginError, anything else a plug-in bug."""
    try:
        return call()
    except ModuleNotFoundError as exc:
        if module is not None and exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            raise PluginError(f"{where}: no module named {exc.name!r} (is it installed, or on the path?)") from None
        _note(exc, where)
        raise
    except Exception as exc:
        _note(exc, where)
        raise


def _note(exc: BaseException, where: str) -> None:
    if hasattr(exc, "add_note"):  # Python >= 3.11
        exc.add_note(f"(raised while importing sapo_vl {where})")


def split_imports(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split ``--import MODULE`` / ``--import=MODULE`` (repeatable) out of ``argv``."""
    rest, imports, it = [], [], iter(argv)
    for arg in it:
        if arg == "--import":
            imports.append(next(it, ""))
        elif arg.startswith("--import="):
            imports.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
    return rest, imports
