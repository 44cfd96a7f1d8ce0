"""Tokenised (prompt, response) examples, cached on disk so a rerun or ``--resume`` skips tokenising.

Chat templates are rendered in Python per example, which makes encoding a large preference set
the slow part of starting a run. The cache key is a hash of everything the token ids depend
on: the tokenizer (its whole serialised pipeline, chat template and special tokens), the length
budget, the encoder's version and the exact texts. A changed tokenizer, template, ``max_length``
or record therefore misses the cache; nothing stale is ever served.

Entries are safetensors files (flat int32 ids plus offsets) under ``$DPO3D_CACHE/encoded/``;
delete the folder to reclaim the space. No pickles. Each entry carries its key and a sha256 of its
arrays in its metadata: an entry that fails to read, was written for another key, does not match its
checksum or holds ids the tokenizer cannot have (garbled bytes, a truncated file) is dropped with one
warning and encoded again; it is never trained on. A cache that cannot be written (a read-only or full
disk) is a warning: the run goes on without it.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dpo3d.data.faults import write_failure_text
from dpo3d.data.records import temp_beside
from dpo3d.data.sequences import EncodedPair, encode_pair

#: bump when encode_pair's output or the entry's layout changes for the same inputs (2: key and checksum)
ENCODER_VERSION = "2"
_PARTS = ("prompt", "response")


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of what makes the tokenizer's ids: its fast pipeline (or vocabulary), template, specials."""
    digest = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    digest.update(backend.to_str().encode() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    for part in (type(tokenizer).__name__, tokenizer.chat_template or "", str(tokenizer.special_tokens_map)):
        digest.update(b"\0" + str(part).encode())
    return digest.hexdigest()


def cache_key(tokenizer, items: Sequence[tuple[Any, Any]], max_length: int | None) -> str:
    digest = hashlib.sha256(f"{ENCODER_VERSION}\0{tokenizer_fingerprint(tokenizer)}\0{max_length}\0".encode())
    for prompt, response in items:
        digest.update(json.dumps([prompt, response], ensure_ascii=False, sort_keys=True).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:32]


def _pack(encoded: Sequence[EncodedPair]) -> dict[str, np.ndarray]:
    arrays = {}
    for part in (f"{name}_ids" for name in _PARTS):
        lists = [getattr(pair, part) for pair in encoded]
        arrays[part] = np.fromiter((token for ids in lists for token in ids), dtype=np.int32)
        arrays[part.replace("ids", "offsets")] = np.cumsum([0] + [len(ids) for ids in lists], dtype=np.int64)
    return arrays


def content_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """A sha256 of an entry's arrays: each one's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


class _BadEntry(Exception):
    """Why a cache entry cannot be served."""


def _checked(arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None, key: str, count: int,
             vocab_size: int) -> dict[str, np.ndarray]:
    """The entry's arrays if it is the whole entry ``key`` names, else _BadEntry saying what is wrong."""
    metadata = metadata or {}
    if metadata.get("key") != key:
        raise _BadEntry("it was written for another input")
    if metadata.get("sha256") != content_digest(arrays):
        raise _BadEntry("its content does not match its checksum")
    for part in _PARTS:
        ids, offsets = arrays.get(f"{part}_ids"), arrays.get(f"{part}_offsets")
        if ids is None or offsets is None or ids.ndim != 1 or offsets.ndim != 1:
            raise _BadEntry(f"its {part} arrays are missing or misshapen")
        if len(offsets) != count + 1 or offsets[0] != 0 or offsets[-1] != len(ids) or (np.diff(offsets) < 0).any():
            raise _BadEntry(f"its {part} offsets do not fit {count} examples")
        if len(ids) and (ids.min() < 0 or ids.max() >= vocab_size):
            raise _BadEntry(f"it holds {part} ids outside the tokenizer's {vocab_size}")
    return dict(arrays)


def _unpack(arrays: Mapping[str, np.ndarray]) -> list[EncodedPair]:
    parts = {}
    for part in _PARTS:
        ids, offsets = arrays[f"{part}_ids"].tolist(), arrays[f"{part}_offsets"].tolist()
        parts[part] = [ids[start:end] for start, end in zip(offsets[:-1], offsets[1:], strict=True)]
    return [EncodedPair(p, r) for p, r in zip(parts["prompt"], parts["response"], strict=True)]


def _read(path: Path, key: str, count: int, vocab_size: int) -> list[EncodedPair] | None:
    """The entry at ``path``, or None: absent, or damaged (then dropped, with one warning)."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="np") as handle:
            metadata = handle.metadata()
            arrays = {name: handle.get_tensor(name) for name in handle.keys()}
        return _unpack(_checked(arrays, metadata, key, count, vocab_size))
    except (SafetensorError, OSError, ValueError, _BadEntry) as err:
        problem = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        warnings.warn(f"{path}: dropped a damaged encoding-cache entry ({problem}); encoding again", stacklevel=3)
        path.unlink(missing_ok=True)
        return None


def _write(path: Path, key: str, encoded: Sequence[EncodedPair]) -> None:
    """Store an entry atomically; a cache that cannot be written is a warning (the run goes on without it)."""
    from safetensors import SafetensorError
    from safetensors.numpy import save_file

    arrays = _pack(encoded)
    try:
        with temp_beside(path) as (handle, tmp_name):
            os.close(handle)
            save_file(arrays, tmp_name, metadata={"key": key, "sha256": content_digest(arrays)})
    except (OSError, SafetensorError) as err:
        problem = write_failure_text(err)
        warnings.warn(f"{path.parent}: the encoding cache was not written ({problem}); going on without it "
                      "(the next run encodes again)", stacklevel=3)


def encode_cached(
    tokenizer,
    items: Sequence[tuple[Any, Any]],
    max_length: int | None,
    cache: Path | None,
) -> tuple[list[EncodedPair], bool]:
    """``encode_pair`` for every (prompt, response), read from ``cache`` when the same encoding is
    there; returns the examples and whether they came from the cache. ``cache=None`` disables it."""
    if cache is None or not items:
        return [encode_pair(tokenizer, p, r, max_length) for p, r in items], False
    key = cache_key(tokenizer, items, max_length)
    path = Path(cache) / f"{key}.safetensors"
    found = _read(path, key, len(items), len(tokenizer))
    if found is not None:
        return found, True
    encoded = [encode_pair(tokenizer, p, r, max_length) for p, r in items]
    _write(path, key, encoded)
    return encoded, False


def default_cache() -> Path:
    from dpo3d.data.cache import cache_dir

    return cache_dir() / "encoded"
