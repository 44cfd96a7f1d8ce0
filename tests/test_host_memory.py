"""dpo3d.models.host_memory: inside `kept`, a freed big tensor's pages serve the next one without page faults
(once the heap has settled, as a training loop's does after its first steps)."""

from __future__ import annotations

import resource

import pytest
import torch

from dpo3d.models import host_memory
from dpo3d.training.config import LoopConfig

pytestmark = pytest.mark.skipif(host_memory._glibc() is None, reason="glibc's mallopt only")

PAGES = 64 * 2**20 // 4096  # a 64 MiB tensor: above glibc's largest mmap threshold (32 MiB)


def faults_of_a_second_tensor() -> int:
    """Minor page faults of allocating and writing a 64 MiB tensor after one of the same size was freed."""
    first = torch.empty(PAGES * 1024, dtype=torch.float32).fill_(1.0)
    del first
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    second = torch.empty(PAGES * 1024, dtype=torch.float32).fill_(2.0)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    del second
    return faults


def test_inside_kept_freed_pages_serve_again_and_on_exit_they_go_back_to_the_kernel():
    with host_memory.kept() as active:
        assert active
        # some rounds land in never-touched parts of the heap (which ones depends on what else the
        # process allocates in between: under pytest e.g. [16384, 16384, 0, 16384, ..., 0, 0]); released,
        # no round ever reuses a page (every one is a fresh mmap)
        rounds = [faults_of_a_second_tensor() for _ in range(8)]
    after = faults_of_a_second_tensor()
    assert min(rounds) < PAGES // 20, rounds  # a few stray pages at most, not the tensor's 16,384
    assert after >= PAGES * 9 // 10, after  # malloc_trim on exit handed the kept pages back: they fault in anew


def test_disabled_or_without_glibc_nothing_changes(monkeypatch):
    with host_memory.kept(enabled=False) as active:
        assert not active
        assert min(faults_of_a_second_tensor() for _ in range(8)) >= PAGES * 9 // 10
    monkeypatch.setattr(host_memory, "_glibc", lambda: None)
    with host_memory.kept() as active:
        assert not active


def test_the_training_loop_keeps_host_memory_on_the_cpu_only_when_told_to(monkeypatch, tmp_path):
    from dpo3d.training import loop

    seen: list[bool] = []

    class Stop(Exception):
        pass

    def recording(enabled: bool = True):
        seen.append(enabled)
        raise Stop

    monkeypatch.setattr(loop.host_memory, "kept", recording)
    assert LoopConfig.keep_host_memory is False  # off by default: it costs peak memory
    for keep in (True, False):
        with pytest.raises(Stop):
            loop.train(None, None, None, LoopConfig(out=tmp_path, cpu=True, keep_host_memory=keep))
    assert seen == [True, False]
