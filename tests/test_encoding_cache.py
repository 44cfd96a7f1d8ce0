"""Tokenised pairs are cached: a rerun reads them back, anything that changes the ids misses."""

from __future__ import annotations

from dpo3d.data import encoding_cache
from dpo3d.pairs.pair_set import load_pairs

from .test_train_dpo import write_pairs


def test_a_rerun_reads_the_same_encoding_from_the_cache(tmp_path, tokenizer, counted):
    pairs = write_pairs(tmp_path / "pairs.jsonl", n=6)
    first = load_pairs(pairs, tokenizer, 128, unseen_limit=4, cache=tmp_path / "cache")
    assert counted["n"] == 6 + 6 + 4  # chosen, rejected, unseen
    again = load_pairs(pairs, tokenizer, 128, unseen_limit=4, cache=tmp_path / "cache")
    assert counted["n"] == 16, "the rerun tokenised again"
    assert (again.chosen, again.rejected, again.unseen) == (first.chosen, first.rejected, first.unseen)
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1


def test_a_changed_length_text_or_tokenizer_misses(tmp_path, tokenizer, counted):
    pairs = write_pairs(tmp_path / "pairs.jsonl", n=3)
    cache = tmp_path / "cache"
    load_pairs(pairs, tokenizer, 128, unseen_limit=0, cache=cache)
    load_pairs(pairs, tokenizer, 16, unseen_limit=0, cache=cache)
    assert counted["n"] == 12, "another max_length must not reuse the entry"
    short = load_pairs(pairs, tokenizer, 16, unseen_limit=0, cache=None)
    assert all(len(pair) <= 16 for pair in short.chosen)
    items = [("p", "a"), ("p", "b")]
    assert encoding_cache.cache_key(tokenizer, items, 64) != encoding_cache.cache_key(tokenizer, [("p", "a"), ("p", "c")], 64)
    original = tokenizer.chat_template
    try:
        tokenizer.chat_template = original + " "
        changed = encoding_cache.cache_key(tokenizer, items, 64)
    finally:
        tokenizer.chat_template = original
    assert changed != encoding_cache.cache_key(tokenizer, items, 64)


def test_a_damaged_entry_is_recomputed(tmp_path, tokenizer, counted):
    pairs = write_pairs(tmp_path / "pairs.jsonl", n=2)
    cache = tmp_path / "cache"
    first = load_pairs(pairs, tokenizer, 128, unseen_limit=0, cache=cache)
    next(cache.glob("*.safetensors")).write_bytes(b"not a safetensors file")
    again = load_pairs(pairs, tokenizer, 128, unseen_limit=0, cache=cache)
    assert counted["n"] == 8 and again.chosen == first.chosen
