"""Token-level dispersion: at the first position where chosen and rejected differ, p(chosen's token),
p(rejected's token) and the rest, under one shared context."""

from __future__ import annotations

import math

import pytest
import torch

from dpo3d.data.sequences import EncodedPair
from dpo3d.scoring.forward import LogprobOptions
from dpo3d.watch.divergence import divergence_probabilities, first_divergence

PLAIN = LogprobOptions(head_chunk=None, packing=False)


def pair(prompt, chosen, rejected):
    return EncodedPair(list(prompt), list(chosen)), EncodedPair(list(prompt), list(rejected))


def test_first_divergence_is_the_first_differing_response_token():
    chosen, rejected = pair([1, 2], [5, 6, 7, 8], [5, 6, 9, 8])
    assert first_divergence(chosen, rejected) == 2
    chosen, rejected = pair([1, 2], [5, 6], [5, 6, 9])  # a prefix: the shorter one ends where the other goes on
    assert first_divergence(chosen, rejected) is None
    assert first_divergence(*pair([1, 2], [5, 6], [5, 6])) is None  # identical responses never diverge
    assert first_divergence(EncodedPair([1], [5]), EncodedPair([2], [6])) is None  # another prompt: no shared context


class Bigram(torch.nn.Module):
    """p(next | last token) is a fixed table: the probabilities can be read off it by hand."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.logits = torch.nn.Parameter(table.log())
        self.config = type("Config", (), {"tie_word_embeddings": False})()

    def forward(self, input_ids, attention_mask=None, position_ids=None, **kwargs):
        return type("Out", (), {"logits": self.logits[input_ids]})()

    def get_output_embeddings(self):
        return None


def test_probabilities_at_the_divergence_come_from_the_shared_context():
    vocab = 6
    table = torch.full((vocab, vocab), 0.05)
    table[3] = torch.tensor([0.05, 0.05, 0.05, 0.05, 0.6, 0.2])  # after token 3: chosen 4 at 0.6, rejected 5 at 0.2
    table = table / table.sum(-1, keepdim=True)
    model = Bigram(table)
    pairs = [pair([1, 2], [3, 4, 1], [3, 5, 1]), pair([1, 2], [3, 4], [3, 4])]  # the second never diverges
    found = divergence_probabilities(model, [c for c, _ in pairs], [r for _, r in pairs], pad_id=0,
                                     batch_size=4, options=PLAIN)
    assert found["probe_divergence_pairs"] == 1
    assert found["probe_divergence_chosen_p"] == pytest.approx(0.6, abs=1e-6)
    assert found["probe_divergence_rejected_p"] == pytest.approx(0.2, abs=1e-6)
    assert found["probe_divergence_other_p"] == pytest.approx(0.2, abs=1e-6)
    assert math.isclose(sum(found[f"probe_divergence_{k}_p"] for k in ("chosen", "rejected", "other")), 1.0,
                        abs_tol=1e-6)


def test_no_diverging_pair_gives_no_fields():
    model = Bigram(torch.full((4, 4), 0.25))
    assert divergence_probabilities(model, [EncodedPair([1], [2])], [EncodedPair([1], [2])], 0, 4, PLAIN) == {}
