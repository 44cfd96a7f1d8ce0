"""Tiny randomly initialised causal LMs with the bundled model's architecture and tokenizer.

For tests and benchmarks of the machinery (not of the science): a few layers and
a small hidden size, so a training step takes milliseconds on a CPU, while the
tokenizer and chat template are the real SmolLM2 ones.
"""

from __future__ import annotations

import os

import torch

from dpo3d.models.loading import BUNDLED, LoadOptions, load_tokenizer, save_pretrained


def tiny_causal_lm(tokenizer, hidden_size: int = 32, layers: int = 2, heads: int = 4, seed: int = 0):
    """A LlamaForCausalLM (SmolLM2's architecture) over ``tokenizer``'s vocabulary, seeded."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(generator_state)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model


def write_tiny_model(folder: str | os.PathLike, seed: int = 0, **sizes) -> str:
    """Save a tiny model with the bundled tokenizer as a model folder; returns its path."""
    tokenizer = load_tokenizer(BUNDLED, LoadOptions())
    model = tiny_causal_lm(tokenizer, seed=seed, **sizes)
    save_pretrained(model, tokenizer, folder)
    return str(folder)
