"""Shared fixtures: the real SmolLM2 tokenizer around tiny random models.

Under ``pytest -n N`` (``just test`` runs one worker per CPU) each worker computes with one thread, and
the commands its tests start inherit that: N workers keep N cores busy instead of fighting over them.
"""

from __future__ import annotations

import os
import sys

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    if "torch" in sys.modules:  # imported before this file (by a plugin): its pool is already made
        sys.modules["torch"].set_num_threads(1)


@pytest.fixture(scope="session")
def tokenizer():
    from dpo3d.models.loading import BUNDLED, load_tokenizer

    return load_tokenizer(BUNDLED)


@pytest.fixture(scope="session")
def tiny_model(tokenizer):
    from dpo3d.models.tiny import tiny_causal_lm

    return tiny_causal_lm(tokenizer, seed=0)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer):
    """A tiny model saved as a Hugging Face folder, for CLI tests (`--model DIR`)."""
    from dpo3d.models.loading import save_pretrained
    from dpo3d.models.tiny import tiny_causal_lm

    folder = tmp_path_factory.mktemp("models") / "tiny"
    save_pretrained(tiny_causal_lm(tokenizer, seed=0), tokenizer, folder)
    return folder


@pytest.fixture(scope="session")
def bundled_model():
    """The real SmolLM2-135M-Instruct (converted once into the cache). For `slow` tests."""
    from dpo3d.models.loading import BUNDLED, load_model_and_tokenizer

    return load_model_and_tokenizer(BUNDLED)


@pytest.fixture
def counted(monkeypatch):
    """How many (prompt, response) examples the encoding cache tokenised (a hit tokenises none)."""
    from dpo3d.data import encoding_cache

    calls = {"n": 0}
    encode = encoding_cache.encode_pair

    def counting(*args, **kwargs):
        calls["n"] += 1
        return encode(*args, **kwargs)

    monkeypatch.setattr(encoding_cache, "encode_pair", counting)
    return calls
