"""sapo_vl: RL fine-tuning of Qwen3-VL (MoE) vision-language models with SAPO.

Importing the package makes torchvision importable beside a CPU torch when it is first imported (see
``sapo_vl._compat``), so that transformers' Qwen3-VL processors and qwen-vl-utils work on CPU machines.
"""

import os as _os

_os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from sapo_vl._compat import patch_on_first_lookup as _patch_tv  # noqa: E402

_patch_tv()

__version__ = "0.1.0"
