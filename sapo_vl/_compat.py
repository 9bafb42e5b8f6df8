"""Make torchvision importable beside a CPU-only torch.

Why this exists
---------------
PyPI ships torchvision's Linux wheels compiled against CUDA torch. Installed beside a CPU torch build, the compiled
extension ``torchvision/_C.so`` cannot be loaded, and ``import torchvision`` then dies while registering fake
(meta) kernels for ``torchvision::nms`` with "operator torchvision::nms does not exist". transformers' image and
video processors (Qwen3VLProcessor needs the video one) and ``qwen_vl_utils`` import torchvision, so they break too.

The remedy
----------
If, and only if, the extension fails to load, we declare the two operator *schemas* that torchvision's Python code
looks up at import (``nms`` and ``qnms``) with ``torch.library``. No kernel is registered: calling
``torchvision.ops.nms`` still raises, but the pure-Python transforms that the processors use import and work.
(Torchvision-backed and PIL-backed Qwen2-VL image processors were measured to give identical pixels on our CPU
machines.) Wherever the extension loads (a matching CUDA machine, a CPU torchvision build), this is a no-op.

``sapo_vl/__init__.py`` installs ``patch_on_first_lookup``, which runs :func:`ensure_torchvision_importable` when
torchvision is first imported or probed (transformers probes it), so importing sapo_vl itself imports no torch.
"""

from __future__ import annotations

import glob
import importlib.abc
import importlib.util
import os
import sys

_LIBRARY = None  # keeps the torch.library.Library (and so the schemas) alive for the process
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)


def _extension_loads(package_dir: str) -> bool:
    import torch  # here: only when torchvision is looked up (see patch_on_first_lookup)

    for path in glob.glob(os.path.join(package_dir, "_C*.so")) + glob.glob(os.path.join(package_dir, "_C*.pyd")):
        try:
            torch.ops.load_library(path)
            return True
        except (OSError, RuntimeError):
            return False
    return False


def _op_exists(name: str) -> bool:
    import torch  # here: only when torchvision is looked up (see patch_on_first_lookup)

    try:
        getattr(torch.ops.torchvision, name)
        return True
    except (AttributeError, RuntimeError):
        return False


def ensure_torchvision_importable() -> str:
    """Declare torchvision's operator schemas when its compiled extension cannot load.

    Returns what was done: "absent" (torchvision not installed), "already-imported", "native" (the extension
    loaded, nothing to do) or "patched" (schemas declared).
    """
    global _LIBRARY
    if "torchvision" in sys.modules:
        return "already-imported"
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return "absent"
    if _extension_loads(os.path.dirname(spec.origin)) or _LIBRARY is not None:
        return "native" if _LIBRARY is None else "patched"
    import torch  # here, as above

    missing = [s for s in _SCHEMAS if not _op_exists(s.split("(")[0])]
    if missing:
        _LIBRARY = torch.library.Library("torchvision", "DEF")  # noqa: TOR901 - schemas only, see docstring
        for schema in missing:
            _LIBRARY.define(schema)
    return "patched"


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    """First on ``sys.meta_path``: at the first lookup of torchvision, leaves and runs the check, then lets the
    ordinary finders import it."""

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision" and self in sys.meta_path:
            sys.meta_path.remove(self)
            ensure_torchvision_importable()
        return None


def patch_on_first_lookup() -> None:
    if "torchvision" not in sys.modules and not any(isinstance(f, _BeforeTorchvision) for f in sys.meta_path):
        sys.meta_path.insert(0, _BeforeTorchvision())
