"""dpo3d.host_memory: inside `kept`, a freed big tensor's pages serve the next one without page faults
(once the heap has settled, as a training loop's does after its first steps)."""

from __future__ import annotations

import resource

import pytest
import torch

from dpo3d import host_memory
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


def test_inside_kept_freed_pages_serve_again_and_after_it_glibc_maps_afresh():
    with host_memory.kept() as active:
        assert active
        for _ in range(2):  # the first rounds may land in never-touched holes of the heap
            faults_of_a_second_tensor()
        inside = faults_of_a_second_tensor()
    after = faults_of_a_second_tensor()
    assert inside < PAGES // 20, inside  # a few stray pages at most, not the tensor's 16,384
    assert after >= PAGES * 9 // 10, after  # restored: every page of a fresh mmap faults in


def test_disabled_or_without_glibc_nothing_changes(monkeypatch):
    with host_memory.kept(enabled=False) as active:
        assert not active
        assert faults_of_a_second_tensor() >= PAGES * 9 // 10
    monkeypatch.setattr(host_memory, "_glibc", lambda: None)
    with host_memory.kept() as active:
        assert not active


def test_the_training_loop_keeps_host_memory_on_the_cpu_unless_told_not_to(monkeypatch, tmp_path):
    from dpo3d.training import loop

    seen: list[bool] = []

    class Stop(Exception):
        pass

    def recording(enabled: bool = True):
        seen.append(enabled)
        raise Stop

    monkeypatch.setattr(loop.host_memory, "kept", recording)
    assert LoopConfig.keep_host_memory is True
    for keep in (True, False):
        with pytest.raises(Stop):
            loop.train(None, None, None, LoopConfig(out=tmp_path, cpu=True, keep_host_memory=keep))
    assert seen == [True, False]
