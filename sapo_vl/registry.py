"""One registry idiom for every kind of plug-in named in a config: datasets, rewards, policy losses, advantages,
aggregation modes, KL estimators, algorithm presets, VQA metrics, eval adapters, official metrics.

A ``Registry`` is a ``dict`` (name -> object) that knows what kind of thing it holds, so every registry
registers and fails the same way::

    from sapo_vl.data import DATASETS

    @DATASETS.register("my_charts")          # or DATASETS.register("my_charts", build_my_charts)
    def build_my_charts(split="train", **kw): ...

    DATASETS["my_chart"]   # UnknownNameError: unknown dataset 'my_chart'; registered datasets: ...
                           #   (did you mean 'my_charts'?)

Registering a taken name raises unless ``overwrite=True``. Plug-ins register at import time; see
``sapo_vl.plugins`` for how the command line imports them.
"""

from __future__ import annotations

import difflib
from typing import Any

from sapo_vl.errors import UnknownNameError


def unknown_name(kind: str, name: Any, known: list[str]) -> UnknownNameError:
    """The one error for a name nothing registered: the kind, the name, the registered names, the closest."""
    close = difflib.get_close_matches(str(name), known, n=1) if isinstance(name, str) else []
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    plural = kind + ("es" if kind.endswith("s") else "s")
    return UnknownNameError(f"unknown {kind} {name!r}; registered {plural}: {', '.join(sorted(known)) or 'none'}"
                            f"{hint}")


class Registry(dict):
    """``name -> object`` for one kind of plug-in, with ``register`` and an error that names the kind. Entries are
    callables, or instances of ``of`` where given (e.g. the algorithm presets); ``hints`` completes the error for
    names a user may expect here (e.g. an algorithm that is not a loss of its own)."""

    def __init__(self, kind: str, entries: dict[str, Any] | None = None, *, of: type | None = None,
                 hints: dict[str, str] | None = None):
        super().__init__(entries or {})
        self.kind, self.of, self.hints = kind, of, hints or {}

    def __missing__(self, name: str):
        raise self._unknown(name)

    def _unknown(self, name: Any, where: str = "") -> UnknownNameError:
        hint = self.hints.get(name) if isinstance(name, str) else None
        message = f"{where + ': ' if where else ''}{unknown_name(self.kind, name, list(self))}"
        return UnknownNameError(f"{message} {hint}" if hint else message)

    def register(self, name: str, obj: Any = None, *, overwrite: bool = False) -> Any:
        """Register ``obj`` under ``name``; used as ``register(name, obj)`` or as the decorator
        ``@register(name)``. Returns ``obj``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty str, got {name!r}")

        def add(value: Any) -> Any:
            if not (isinstance(value, self.of) if self.of else callable(value)):
                expected = self.of.__name__ if self.of else "callable"
                raise TypeError(f"{self.kind} {name!r} must be {expected}, got {type(value).__name__}")
            if name in self and self[name] is not value and not overwrite:
                raise ValueError(f"{self.kind} {name!r} is already registered; pass overwrite=True to replace it")
            self[name] = value
            return value

        return add if obj is None else add(obj)

    def check(self, name: str, where: str = "") -> str:
        """``name`` if registered, else the unknown-name error (prefixed with ``where``, e.g. a config key)."""
        if name not in self:
            raise self._unknown(name, where)
        return name

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {sorted(self)})"

