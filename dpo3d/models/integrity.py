"""Weight files checked before use: one that safetensors refuses (truncated, emptied, a garbled header),
or whose floats hold NaN or inf (garbled bytes), is a :class:`CorruptFile` naming it and the remedy.

safetensors itself checks a file's header and that the file is as long as the header says; it keeps no
checksum of the tensor bytes, so garbled values pass it. A NaN or inf where a trained weight should be
is what such garbling shows most often (any float32 whose exponent bits all come out set), and finding
one costs a pass over the weights, in chunks so it needs little memory. Byte-exact checks need a digest
saved beside the files (a checkpoint's manifest: training/checkpoint.py).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import torch

from dpo3d.data.faults import CorruptFile

#: elements checked for NaN/inf at a time (a 64 MiB bool mask at most for float32 weights)
_CHUNK = 1 << 26


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def first_non_finite(tensors: Iterable[tuple[str, torch.Tensor]]) -> str | None:
    """The name of the first floating tensor holding a NaN or an inf, or None."""
    for name, tensor in tensors:
        if not tensor.is_floating_point():
            continue
        flat = tensor.detach().reshape(-1)
        for start in range(0, flat.numel(), _CHUNK):
            if not bool(torch.isfinite(flat[start : start + _CHUNK]).all()):
                return name
    return None


def check_header(path: str | os.PathLike, what: str, remedy: str) -> None:
    """Open a safetensors file's header (no tensor is read): a file too short for it, an emptied one or a
    garbled header is a CorruptFile."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except FileNotFoundError:
        raise CorruptFile(path, what, "missing", remedy) from None
    except (SafetensorError, OSError, ValueError) as err:
        raise CorruptFile(path, what, first_line(err), remedy) from None


def read_weights(path: str | os.PathLike, what: str, remedy: str) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors, refused as a CorruptFile when unreadable or holding NaN or inf."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except FileNotFoundError:
        raise CorruptFile(path, what, "missing", remedy) from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CorruptFile(path, what, first_line(err), remedy) from None
    bad = first_non_finite(tensors.items())
    if bad is not None:
        raise CorruptFile(path, what, f"tensor {bad} holds NaN or inf: the bytes are garbled", remedy)
    return tensors


def non_finite_in_files(files: Iterable[Path]) -> tuple[Path, str] | None:
    """The first (file, tensor) holding NaN or inf among safetensors files, read one tensor at a time."""
    from safetensors import safe_open

    for path in files:
        with safe_open(str(path), framework="pt") as handle:
            bad = first_non_finite((name, handle.get_tensor(name)) for name in handle.keys())
        if bad is not None:
            return path, bad
    return None


def file_sha256(path: str | os.PathLike) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
