"""Tokenised (prompt, response) examples, cached on disk so a rerun or ``--resume`` skips tokenising.

Chat templates are rendered in Python per example, which makes encoding a large preference set
the slow part of starting a run. The cache key is a hash of everything the token ids depend
on: the tokenizer (its whole serialised pipeline, chat template and special tokens), the length
budget, the encoder's version and the exact texts. A changed tokenizer, template, ``max_length``
or record therefore misses the cache; nothing stale is ever served.

Entries are safetensors files (flat int32 ids plus offsets) under ``$DPO3D_CACHE/encoded/``;
delete the folder to reclaim the space. No pickles.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dpo3d.data.sequences import EncodedPair, encode_pair

#: bump when encode_pair's output changes for the same inputs
ENCODER_VERSION = "1"


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
    for part in ("prompt_ids", "response_ids"):
        lists = [getattr(pair, part) for pair in encoded]
        arrays[part] = np.fromiter((token for ids in lists for token in ids), dtype=np.int32)
        arrays[part.replace("ids", "offsets")] = np.cumsum([0] + [len(ids) for ids in lists], dtype=np.int64)
    return arrays


def _unpack(arrays: dict[str, np.ndarray]) -> list[EncodedPair]:
    parts = {}
    for part in ("prompt", "response"):
        ids, offsets = arrays[f"{part}_ids"].tolist(), arrays[f"{part}_offsets"].tolist()
        parts[part] = [ids[start:end] for start, end in zip(offsets[:-1], offsets[1:], strict=True)]
    return [EncodedPair(p, r) for p, r in zip(parts["prompt"], parts["response"], strict=True)]


def encode_cached(
    tokenizer,
    items: Sequence[tuple[Any, Any]],
    max_length: int | None,
    cache: Path | None,
) -> tuple[list[EncodedPair], bool]:
    """``encode_pair`` for every (prompt, response), read from ``cache`` when the same encoding is
    there; returns the examples and whether they came from the cache. ``cache=None`` disables it."""
    from safetensors.numpy import load_file, save_file

    if cache is None or not items:
        return [encode_pair(tokenizer, p, r, max_length) for p, r in items], False
    path = Path(cache) / f"{cache_key(tokenizer, items, max_length)}.safetensors"
    if path.is_file():
        try:
            found = _unpack(load_file(str(path)))
            if len(found) == len(items):
                return found, True
        except Exception:  # a damaged entry (disk full, killed mid-rename elsewhere) is recomputed
            pass
    encoded = [encode_pair(tokenizer, p, r, max_length) for p, r in items]
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=".enc.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        save_file(_pack(encoded), tmp)
        os.replace(tmp, path)
    except OSError:  # a read-only or full cache only costs the next run the encoding
        Path(tmp).unlink(missing_ok=True)
    return encoded, False


def default_cache() -> Path:
    from dpo3d.data.cache import cache_dir

    return cache_dir() / "encoded"
