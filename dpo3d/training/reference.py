"""Reference log-probs: computed once before training, cached beside the run.

The reference model is loaded (or the starting policy is used), scores every
sequence training and evaluation will need, and is then dropped. The cache is
a safetensors file keyed by a fingerprint of the reference model and the token
ids, so a resumed or repeated run reuses it and a changed input recomputes it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from dpo3d.data.sequences import EncodedPair
from dpo3d.scoring.forward import LogprobOptions
from dpo3d.scoring.logprobs import score_sequences

CACHE_FILE = "reference_logps.safetensors"


def fingerprint(reference: str, groups: Mapping[str, Sequence[EncodedPair]]) -> str:
    digest = hashlib.sha256(reference.encode())
    for name in sorted(groups):
        digest.update(name.encode())
        for seq in groups[name]:
            digest.update(repr((seq.prompt_ids, seq.response_ids)).encode())
    return digest.hexdigest()


def cached(out: Path, key: str) -> dict[str, torch.Tensor] | None:
    path = Path(out) / CACHE_FILE
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as handle:
        if (handle.metadata() or {}).get("fingerprint") != key:
            return None
        return {name: handle.get_tensor(name) for name in handle.keys()}


def compute(model, groups: Mapping[str, Sequence[EncodedPair]], pad_id: int, batch_size: int,
            padding_side: str = "right", options: LogprobOptions | None = None) -> dict[str, torch.Tensor]:
    """Summed log-probs of every group's sequences (float32 tensors)."""
    was_training = model.training
    model.eval()
    try:
        return {
            name: score_sequences(model, seqs, pad_id, batch_size, padding_side, options).sum
            for name, seqs in groups.items() if len(seqs)
        }
    finally:
        model.train(was_training)


def store(out: Path, key: str, tensors: dict[str, torch.Tensor]) -> None:
    path = Path(out) / CACHE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"fingerprint": key})
    tmp.replace(path)
