"""Peak memory of each phase of a run: host RSS on every machine, and on CUDA the allocator's peak.

``PhasePeaks.phase(name)`` resets the process's peak before the phase and records it after:

- host: the kernel's high-water mark of this process's resident memory (``VmHWM`` in ``/proc/self/status``), reset by
  writing 5 to ``/proc/self/clear_refs`` (Linux >= 4.0), so a phase's peak is its own, not the run's so far;
- CUDA: ``torch.cuda.max_memory_allocated`` (tensors) and ``max_memory_reserved`` (what the caching allocator holds,
  what ``nvidia-smi`` sees minus the context), reset by ``torch.cuda.reset_peak_memory_stats``.

The trainer logs them as ``memory/<phase>/host_gib`` (and ``gpu_gib``, ``gpu_reserved_gib``), the largest over the
ranks, and ``memory/baseline/host_gib``: the process before any weights are loaded (interpreter, torch, transformers,
data), the fixed cost that does not fall with the number of ranks. ``benchmarks/bench_memory.py`` reads them.
"""

from __future__ import annotations

import ctypes
import re
from contextlib import contextmanager
from pathlib import Path

import torch

GiB = 1024 ** 3
_STATUS = Path("/proc/self/status")


def _status_bytes(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` in bytes (None where /proc is not available)."""
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


def return_freed_blocks(threshold: int = 1 << 20) -> bool:
    """glibc's allocator: serve every block of ``threshold`` bytes or more by its own mapping, handed back to the
    OS when freed. By default glibc raises that threshold to the largest block freed so far (up to 32 MiB), after
    which freed tensors stay in its heap: a sharded rank's resident memory then held its freed gather buffers and
    activations, and 2 ranks peaked near one process's RSS (benchmarks/bench_memory.py). Returns whether it applied
    (False off glibc)."""
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(-3, threshold))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def reset_peaks() -> bool:
    """Start a new peak (host and CUDA). Returns whether the host peak could be reset."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class PhasePeaks:
    """Peak memory per phase name, this process; ``take()`` hands over what was recorded since the last call."""

    def __init__(self):
        self.peaks: dict[str, float] = {}
        self.baseline: float | None = None

    @contextmanager
    def phase(self, name: str):
        reset_peaks()
        try:
            yield
        finally:
            self._record(name)

    def mark_baseline(self) -> None:
        rss = _status_bytes("VmRSS")  # resident memory now
        if rss is not None:
            self.baseline = rss / GiB

    def _record(self, name: str) -> None:
        values = {}
        host = _status_bytes("VmHWM")  # the high-water mark since start or the last reset_peaks
        if host is not None:
            values["host_gib"] = host / GiB
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            values["gpu_gib"] = torch.cuda.max_memory_allocated() / GiB
            values["gpu_reserved_gib"] = torch.cuda.max_memory_reserved() / GiB
        for key, value in values.items():
            metric = f"memory/{name}/{key}"
            self.peaks[metric] = max(self.peaks.get(metric, 0.0), value)

    def take(self) -> dict[str, float]:
        out = dict(self.peaks)
        if self.baseline is not None:
            out["memory/baseline/host_gib"] = self.baseline
            self.baseline = None
        self.peaks = {}
        return out
