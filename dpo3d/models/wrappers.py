"""The model inside a wrapper: DDP, torch.compile or peft."""

from __future__ import annotations

from torch import nn


def unwrap(model) -> nn.Module:
    """The module a DDP, torch.compile or peft wrapper holds (FSDP2 shards in place: nothing to unwrap)."""
    while True:
        if hasattr(model, "get_base_model") and callable(model.get_base_model):  # peft
            inner = model.get_base_model()
        else:
            inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None or inner is model:
            return model
        model = inner
