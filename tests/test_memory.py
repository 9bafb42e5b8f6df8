"""Peak memory per phase (sapo_vl.memory) and the budget sharded generation keeps decoder layers gathered in."""

from pathlib import Path

import pytest
import torch

from sapo_vl.memory import GiB, PhasePeaks, reset_peaks, return_freed_blocks

pytestmark = pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")


def test_a_phase_peak_is_its_own_not_the_run_s_so_far():
    assert reset_peaks() and return_freed_blocks()
    peaks = PhasePeaks()
    peaks.mark_baseline()
    with peaks.phase("big"):
        x = torch.ones(48 * 2**20 // 4)  # 48 MiB
        x.add_(1.0)
        del x
    with peaks.phase("small"):
        y = torch.ones(4)
        del y
    out = peaks.take()
    assert out["memory/big/host_gib"] - out["memory/small/host_gib"] > 40 / 1024  # the freed 48 MiB went back
    assert 0 < out["memory/baseline/host_gib"] <= out["memory/small/host_gib"] + 0.05
    assert peaks.take() == {}  # handed over once


def test_a_phase_that_runs_twice_keeps_its_larger_peak():
    peaks = PhasePeaks()
    for mib in (48, 4):
        with peaks.phase("update"):
            x = torch.ones(mib * 2**20 // 4)
            x.add_(1.0)
            del x
    first = peaks.take()["memory/update/host_gib"]
    with peaks.phase("update"):
        pass
    assert first - peaks.take()["memory/update/host_gib"] > 40 / 1024


def test_generation_keeps_layers_in_the_free_memory_less_its_own_needs_and_a_tenth_of_the_card(monkeypatch):
    from sapo_vl import parallel

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (30 * GiB, 80 * GiB))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 12 * GiB)  # 5 GiB of it unused
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 7 * GiB)
    budget = parallel.generation_budget(torch.device("cuda", 0), reserve=3 * GiB)
    assert budget == 30 * GiB + 5 * GiB - 3 * GiB - parallel.GENERATION_SLACK * 80 * GiB == 24 * GiB
    assert parallel.generation_budget(torch.device("cpu"), reserve=3 * GiB) == float("inf")


def test_generation_needs_the_kv_cache_of_every_text_layer_and_two_rows_of_logits(tiny_dir):
    from transformers import AutoConfig

    from sapo_vl.rollout.generate import generation_bytes

    text = AutoConfig.from_pretrained(tiny_dir).text_config
    kv = 2 * text.num_hidden_layers * text.num_key_value_heads * text.head_dim * 2  # K and V, bf16
    assert generation_bytes(AutoConfig.from_pretrained(tiny_dir), 8, 100, 2) == 8 * (100 * kv + 2 * text.vocab_size * 4)
