"""Reference log-probs: computed once before training, cached beside the run.

The reference model is loaded (or the starting policy is used), scores every
sequence training and evaluation will need, and is then dropped. The cache is
a safetensors file keyed by a fingerprint of the reference model and the token
ids, so a resumed or repeated run reuses it and a changed input recomputes it. The file also carries a
sha256 of its tensors: one that cannot be read, does not match its checksum or has none (an earlier
version's) is scored again, with a warning naming it; it is derived data (the reference model and the
ids are there to recompute it), so refusing would only make the user delete it by hand. A cache that
cannot be written (a full disk) is a warning too: a resume then scores the reference again.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from dpo3d.data.faults import write_failure_text
from dpo3d.data.records import temp_beside
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


def tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """A sha256 of named tensors: each one's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cached(out: Path, key: str) -> dict[str, torch.Tensor] | None:
    """The stored log-probs if they were scored for ``key``; None: absent, for another input, or
    damaged (then with a warning naming the file: the caller scores the reference again)."""
    path = Path(out) / CACHE_FILE
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("fingerprint") != key:
                return None
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        problem = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return _dropped(path, f"unreadable: {problem}")
    if "sha256" not in metadata:
        return _dropped(path, "written without a checksum, by an earlier version")
    if metadata["sha256"] != tensors_digest(tensors):
        return _dropped(path, "its values do not match its checksum")
    return tensors


def _dropped(path: Path, problem: str) -> None:
    warnings.warn(f"{path}: reference log-probs not used ({problem}); scoring the reference again", stacklevel=3)
    return None


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
    """Write the cache atomically; a failed write is a warning (the run goes on; a resume scores again)."""
    path = Path(out) / CACHE_FILE
    tensors = {name: value.contiguous() for name, value in tensors.items()}
    try:
        with temp_beside(path) as (handle, tmp_name):
            os.close(handle)
            save_file(tensors, tmp_name, metadata={"fingerprint": key, "sha256": tensors_digest(tensors)})
    except (OSError, SafetensorError) as err:
        problem = write_failure_text(err)
        warnings.warn(f"{path}: reference log-probs not cached ({problem}); going on without the cache "
                      "(a resume scores the reference again)", stacklevel=2)
