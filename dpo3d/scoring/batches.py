"""Padded batches of (prompt, response) sequences, and the bookkeeping of their scored tokens.

A batch is padded left or right; position t is *scored* when token t+1 is a response token.
Scorers return per-token values flat in row-major order; ``token_rows`` and ``sum_per_sequence``
fold them back into one value per sequence.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from dpo3d.data.sequences import EncodedPair


@dataclass
class PaddedBatch:
    input_ids: torch.Tensor  # (n, T)
    attention_mask: torch.Tensor  # (n, T) 1 on real tokens
    position_ids: torch.Tensor  # (n, T) positions counted over real tokens only
    response_mask: torch.Tensor  # (n, T) 1 on response tokens (the ones scored)

    def to(self, device) -> PaddedBatch:
        return PaddedBatch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.position_ids, self.response_mask)))


def collate(sequences: Sequence[EncodedPair], pad_id: int, padding_side: str = "right") -> PaddedBatch:
    """Pad a list of (prompt, response) id lists into one batch, left or right."""
    if padding_side not in ("left", "right"):
        raise ValueError("padding_side must be 'left' or 'right'")
    width = max(len(seq) for seq in sequences)
    n = len(sequences)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((n, width), dtype=torch.long)
    response_mask = torch.zeros((n, width), dtype=torch.bool)
    for row, seq in enumerate(sequences):
        ids = seq.prompt_ids + seq.response_ids
        start = 0 if padding_side == "right" else width - len(ids)
        input_ids[row, start : start + len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, start : start + len(ids)] = 1
        response_mask[row, start + len(seq.prompt_ids) : start + len(ids)] = True
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return PaddedBatch(input_ids, attention_mask, position_ids, response_mask)


def scored_positions(batch: PaddedBatch) -> torch.Tensor:
    """(n, T) bool: position t predicts token t+1, so t is scored when token t+1 is a response token."""
    predicts = torch.zeros_like(batch.response_mask)
    predicts[:, :-1] = batch.response_mask[:, 1:]
    return predicts


def token_rows(batch: PaddedBatch) -> torch.Tensor:
    """The row of each scored token, in token_stats' flat row-major order."""
    return torch.nonzero(scored_positions(batch), as_tuple=True)[0]


def sum_per_sequence(values: torch.Tensor, rows: torch.Tensor, n: int) -> torch.Tensor:
    """Per sequence (n, ...): the sum of a per-scored-token tensor (flat, first axis) over its tokens."""
    return torch.zeros((n, *values.shape[1:]), dtype=values.dtype, device=values.device).index_add(0, rows, values)


def response_counts(batch: PaddedBatch, dtype: torch.dtype, check: bool = True) -> torch.Tensor:
    """Scored response tokens per sequence; ``check``: refuse a sequence with none."""
    count = batch.response_mask[:, 1:].sum(-1).to(dtype)
    if check and bool((count == 0).any()):
        raise ValueError("a sequence has no response tokens to score (empty response after truncation?)")
    return count


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices in batches of similar length (longest first), so little compute goes to padding."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]
