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
:mod:`dpo3d.scoring.logprobs`. A high CHES means the rejected response's hidden states
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

from dpo3d.scoring.forward import LogprobOptions
from dpo3d.scoring.logprobs import logprob_fields, scored_batches


@dataclass
class Ches:
    """Per pair, shape (n,): CHES and its length-normalised form."""

    ches: torch.Tensor
    normalized: torch.Tensor


def ches_from_sums(chosen: torch.Tensor, chosen_len: torch.Tensor, rejected: torch.Tensor, rejected_len: torch.Tensor) -> Ches:
    """CHES and its length-normalised form from the summed hidden states H⁺, H⁻ (n, d) and |y⁺|, |y⁻| (n,)."""
    ches = (chosen * rejected).sum(-1) - chosen.pow(2).sum(-1)
    chosen_mean, rejected_mean = chosen / chosen_len.unsqueeze(-1), rejected / rejected_len.unsqueeze(-1)
    return Ches(ches, (chosen_mean * rejected_mean).sum(-1) - chosen_mean.pow(2).sum(-1))


def ches_records(
    model,
    tokenizer,
    records: Sequence[dict],
    batch_size: int = 8,
    max_length: int | None = None,
    on_batch: Callable[[int], None] | None = None,
    options: LogprobOptions | None = None,
    with_logprobs: bool = False,
) -> list[dict[str, float | int]]:
    """``{"ches": ..., "ches_normalized": ...}`` for each pair (prompt/chosen/rejected), in input order;
    with ``with_logprobs`` also :func:`dpo3d.scoring.logprobs.score_records`'s fields, from the same forward.

    The hidden states are the ones the LM head reads while :mod:`dpo3d.scoring.logprobs` scores the pairs
    (batched by length, chosen and rejected of a batch in one forward, the same tokenisation and
    truncation). ``on_batch(n)`` reports the number of pairs just scored.
    """
    for number, record in enumerate(records, 1):
        if "chosen" not in record or "rejected" not in record:
            name = f"id {record['id']!r}" if "id" in record else f"number {number}"
            raise ValueError(f"CHES needs preference pairs (prompt, chosen, rejected); the record with {name} is not a pair")
    results: list[dict[str, float | int]] = [{} for _ in records]
    for slots, logps in scored_batches(model, tokenizer, records, batch_size, max_length, options, hidden_sums=True):
        rows = {slot: row for row, slot in enumerate(slots)}
        pairs = sorted({index for index, _ in slots})
        chosen = torch.tensor([rows[index, "chosen"] for index in pairs])
        rejected = torch.tensor([rows[index, "rejected"] for index in pairs])
        sums, counts = logps.hidden_sum.float().cpu(), logps.count.float().cpu()
        scores = ches_from_sums(sums[chosen], counts[chosen], sums[rejected], counts[rejected])
        for k, index in enumerate(pairs):
            if with_logprobs:
                for name in ("chosen", "rejected"):
                    results[index].update(logprob_fields(logps, rows[index, name], name))
            results[index].update({"ches": float(scores.ches[k]), "ches_normalized": float(scores.normalized[k])})
        if on_batch is not None:
            on_batch(len(pairs))
    return results


def highest_ches(scores: Sequence[float], fraction: float) -> set[int]:
    """Indices of the ⌊fraction·n⌋ highest scores; among equal scores the earlier index goes first."""
    if not 0 <= fraction < 1:
        raise ValueError(f"the share of pairs to drop must be in [0, 1), got {fraction}")
    drop = math.floor(round(fraction * len(scores), 9))
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return set(order[:drop])
