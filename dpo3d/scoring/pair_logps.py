"""Sequence log-probs of pairs plus the token-level extras some losses declare (``LossSpec.inputs``).

- ``shared``: each side's log-prob summed over the pair's first min(|y_w|, |y_l|) response
  tokens (LD-DPO splits there);
- ``wpo``: per response, the mean over its tokens of log π(y_t) - log Σ_v π(v)², WPO's
  sampling-aligned weight in log form, computed without gradient.

One concatenated forward (``logprobs.token_stats``, the one scorer) for a batch of pairs, with or
without extras: the extras cost a mask (shared) or one more reduction over each chunk of logits (wpo).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dpo3d.data.sequences import EncodedPair
from dpo3d.scoring.batches import collate, response_counts, sum_per_sequence, token_rows
from dpo3d.scoring.forward import LogprobOptions
from dpo3d.scoring.logprobs import SequenceLogps, token_stats


def truncate_to_shared(chosen: Sequence[EncodedPair], rejected: Sequence[EncodedPair]) -> tuple[list[EncodedPair], list[EncodedPair]]:
    """Each pair's responses cut to their shared length: scoring these gives the ``shared`` sums
    (a causal model's prefix log-probs do not depend on the tokens after them)."""
    cut_chosen, cut_rejected = [], []
    for c, r in zip(chosen, rejected, strict=True):
        n = min(len(c.response_ids), len(r.response_ids))
        cut_chosen.append(EncodedPair(c.prompt_ids, c.response_ids[:n]))
        cut_rejected.append(EncodedPair(r.prompt_ids, r.response_ids[:n]))
    return cut_chosen, cut_rejected


def pair_logps_with_extras(
    model,
    chosen: Sequence[EncodedPair],
    rejected: Sequence[EncodedPair],
    pad_id: int,
    padding_side: str = "right",
    wanted: frozenset[str] = frozenset(),
    options: LogprobOptions | None = None,
) -> tuple[SequenceLogps, SequenceLogps, dict[str, torch.Tensor]]:
    """Like ``pair_logps``, plus ``extras``: ``chosen_shared``, ``rejected_shared`` and/or
    ``chosen_wpo``, ``rejected_wpo`` (shape (pairs,) each), as ``wanted`` asks."""
    device = next(model.parameters()).device
    batch = collate(list(chosen) + list(rejected), pad_id, padding_side).to(device)
    rows = token_rows(batch)  # row-major: each row's tokens in order
    stats = token_stats(model, batch, options, log_sum_sq="wpo" in wanted)
    logps = stats.logps
    n = batch.input_ids.shape[0]
    count = response_counts(batch, logps.dtype)
    total = sum_per_sequence(logps, rows, n)
    pairs = len(chosen)
    extras: dict[str, torch.Tensor] = {}
    if "shared" in wanted:
        starts = torch.cumsum(count, 0) - count  # index of each row's first scored token
        position = torch.arange(len(rows), device=rows.device) - starts.long()[rows]
        shared_len = torch.minimum(count[:pairs], count[pairs:]).repeat(2)
        inside = (position < shared_len[rows]).to(logps.dtype)
        shared = sum_per_sequence(logps * inside, rows, n)
        extras["chosen_shared"], extras["rejected_shared"] = shared[:pairs], shared[pairs:]
    if "wpo" in wanted:
        with torch.no_grad():
            weights = sum_per_sequence(logps.detach() - stats.log_sum_sq, rows, n) / count
        extras["chosen_wpo"], extras["rejected_wpo"] = weights[:pairs], weights[pairs:]
    both = SequenceLogps(total, total / count, count)
    chosen_logps, rejected_logps = both.split(pairs)
    return chosen_logps, rejected_logps, extras


def pair_logps(
    model, chosen: Sequence[EncodedPair], rejected: Sequence[EncodedPair], pad_id: int, padding_side: str = "right",
    options: LogprobOptions | None = None,
) -> tuple[SequenceLogps, SequenceLogps]:
    """Chosen and rejected of a batch of pairs, in one concatenated forward (no extras)."""
    chosen_logps, rejected_logps, _ = pair_logps_with_extras(model, chosen, rejected, pad_id, padding_side,
                                                             options=options)
    return chosen_logps, rejected_logps
