"""CHES: which preference pairs will displace the chosen response's likelihood under DPO.

The centred hidden-embedding similarity of Razin et al. (2025), *Unintentional
Unalignment: Likelihood Displacement in Direct Preference Optimization* (ICLR 2025),
Definition 2. With ``h(x, y<k)`` the model's last hidden state (the vector the LM
head turns into logits) at the position that predicts response token ``y_k``, and

    H⁺ = Σ_{k=1}^{|y⁺|} h(x, y⁺<k),   H⁻ = Σ_{k=1}^{|y⁻|} h(x, y⁻<k),

    CHES            = ⟨H⁺, H⁻⟩ − ‖H⁺‖²
    CHES normalised = ⟨H⁺/|y⁺|, H⁻/|y⁻|⟩ − ‖H⁺/|y⁺|‖²

(the length-normalised form is the one the paper's Section 6 filters data by). The
positions are the last prompt token through the second-to-last response token,
|y| of them, the same positions whose logits score the response in
:mod:`dpo3d.logprobs`. A high CHES means the rejected response's hidden states
point the way the chosen one's do, so pushing the rejected down drags the
chosen down too (likelihood displacement); the paper filters out the pairs
with the highest CHES.

Checked against the authors' code (github.com/princeton-nlp/unintentional-unalignment):
``ches/ches.py``, ``compute_ches_scores`` keeps the last prompt position onwards
and drops each sequence's final position, and its length normalisation divides
by the response lengths, as above. (Their script
``compute_preference_similarity_per_example.py``,
``get_and_log_hidden_embedding_based_pref_similarities``, also sums the final,
EOS, position and counts |y|+1 positions; we follow the paper's definition and
``ches/ches.py``.)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .logprobs import PaddedBatch, collate, length_sorted_batches
from .sequences import encode_pair

#: the fields :func:`ches_records` adds to each pair
CHES_FIELDS = ("ches", "ches_normalized")


@dataclass
class Ches:
    """Per pair, shape (n,): CHES and its length-normalised form."""

    ches: torch.Tensor
    normalized: torch.Tensor


def last_hidden_states(model, batch: PaddedBatch) -> torch.Tensor:
    """The last layer's hidden states, (n, T, d): what the LM head sees (after the final norm).

    The LM head itself runs on one position only (``logits_to_keep=1``) where the model allows it.
    A PEFT-wrapped model passes the arguments through to its base model.
    """
    inputs = {
        "input_ids": batch.input_ids,
        "attention_mask": batch.attention_mask,
        "position_ids": batch.position_ids,
        "output_hidden_states": True,
    }
    try:
        outputs = model(**inputs, logits_to_keep=1)
    except TypeError:  # a model whose forward has no logits_to_keep
        outputs = model(**inputs)
    return outputs.hidden_states[-1]


def summed_hidden_states(model, batch: PaddedBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sequence: the sum, in float32, of the hidden states that predict its response tokens (n, d),
    and how many there are (n,)."""
    predicts = torch.zeros_like(batch.response_mask)
    predicts[:, :-1] = batch.response_mask[:, 1:]  # position t predicts token t+1
    count = predicts.sum(-1)
    if bool((count == 0).any()):
        raise ValueError("a sequence has no response tokens (empty response after truncation?)")
    hidden = last_hidden_states(model, batch).float()
    return (hidden * predicts.unsqueeze(-1).to(hidden.dtype)).sum(1), count.to(torch.float32)


def ches_from_sums(chosen: torch.Tensor, chosen_len: torch.Tensor, rejected: torch.Tensor, rejected_len: torch.Tensor) -> Ches:
    """CHES and its length-normalised form from the summed hidden states H⁺, H⁻ (n, d) and |y⁺|, |y⁻| (n,)."""
    ches = (chosen * rejected).sum(-1) - chosen.pow(2).sum(-1)
    chosen_mean, rejected_mean = chosen / chosen_len.unsqueeze(-1), rejected / rejected_len.unsqueeze(-1)
    return Ches(ches, (chosen_mean * rejected_mean).sum(-1) - chosen_mean.pow(2).sum(-1))


@torch.no_grad()
def ches_records(
    model,
    tokenizer,
    records: Sequence[dict],
    batch_size: int = 8,
    max_length: int | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> list[dict[str, float]]:
    """``{"ches": ..., "ches_normalized": ...}`` for each pair (prompt/chosen/rejected), in input order.

    Pairs are batched by length; chosen and rejected of a batch go through one forward.
    Tokenisation and truncation are those of :func:`dpo3d.logprobs.score_records`.
    ``on_batch(n)`` reports the number of pairs just scored.
    """
    for number, record in enumerate(records, 1):
        if "chosen" not in record or "rejected" not in record:
            name = f"id {record['id']!r}" if "id" in record else f"number {number}"
            raise ValueError(f"CHES needs preference pairs (prompt, chosen, rejected); the record with {name} is not a pair")
    encoded = [
        (encode_pair(tokenizer, r["prompt"], r["chosen"], max_length), encode_pair(tokenizer, r["prompt"], r["rejected"], max_length))
        for r in records
    ]
    results: list[dict[str, float]] = [{} for _ in records]
    device = next(model.parameters()).device
    padding_side = getattr(tokenizer, "padding_side", "right")
    sizes = [max(len(chosen), len(rejected)) for chosen, rejected in encoded]
    for batch_indices in length_sorted_batches(sizes, batch_size):
        sequences = [encoded[i][0] for i in batch_indices] + [encoded[i][1] for i in batch_indices]
        batch = collate(sequences, tokenizer.pad_token_id, padding_side).to(device)
        sums, counts = summed_hidden_states(model, batch)
        k = len(batch_indices)
        scores = ches_from_sums(sums[:k], counts[:k], sums[k:], counts[k:])
        for row, index in enumerate(batch_indices):
            results[index] = {"ches": float(scores.ches[row]), "ches_normalized": float(scores.normalized[row])}
        if on_batch is not None:
            on_batch(k)
    return results


def highest_ches(scores: Sequence[float], fraction: float) -> set[int]:
    """Indices of the ⌊fraction·n⌋ highest scores; among equal scores the earlier index goes first."""
    if not 0 <= fraction < 1:
        raise ValueError(f"the share of pairs to drop must be in [0, 1), got {fraction}")
    drop = math.floor(round(fraction * len(scores), 9))
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return set(order[:drop])
