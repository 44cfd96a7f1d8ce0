"""The trainers' AdamW: fused where the device has the kernel, the same update as torch's default."""

from __future__ import annotations

import torch

from dpo3d.training.optimizer import adamw


def _trained(optimizer_factory, steps: int = 5) -> list[torch.Tensor]:
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(64, 32)), torch.nn.Parameter(torch.randn(32))]
    optimizer = optimizer_factory(params)
    for step in range(steps):
        for k, p in enumerate(params):
            p.grad = torch.sin(p.detach() * (step + 1) + k)  # gradients known in advance, the same for both
        optimizer.step()
    return [p.detach().clone() for p in params]


def test_fused_on_the_cpu_where_torch_has_the_kernel():
    optimizer = adamw([torch.nn.Parameter(torch.zeros(3))], lr=1e-3)
    assert optimizer.defaults["fused"] is True


def test_the_fused_update_is_the_default_adamws():
    options = {"lr": 1e-2, "weight_decay": 0.1}
    fused = _trained(lambda ps: adamw(ps, **options))
    plain = _trained(lambda ps: torch.optim.AdamW(ps, **options, foreach=False))
    # both compute m, v, the bias corrections and p -= lr·(m̂/(√v̂+ε) + wd·p) in float32, in another order:
    # each of 5 steps may differ by a few float32 roundings (2^-24 relative) of an update of size ~lr = 1e-2 on
    # weights of size ~1; 1e-6 absolute is ~10 roundings per step of headroom, and 50x below one step's update
    start = _trained(lambda ps: torch.optim.AdamW(ps, lr=0.0), steps=0)
    for a, b, before in zip(fused, plain, start, strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-6)
        assert (a - before).abs().max() > 1e-2  # the weights did move: several updates of ~lr each


def test_a_device_without_the_kernel_falls_back(monkeypatch):
    real = torch.optim.AdamW

    def no_fused(params, **options):
        if options.get("fused"):
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported devices")
        return real(params, **options)

    monkeypatch.setattr(torch.optim, "AdamW", no_fused)
    optimizer = adamw([torch.nn.Parameter(torch.zeros(3))], lr=1e-3)
    assert not optimizer.defaults.get("fused")
