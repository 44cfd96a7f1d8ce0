"""Sequence log-probs: batched, padded, response tokens only.

For each sequence: the sum of its response tokens' log-probs (``log π(y|x)``),
their mean per token, and the token count. Chosen and rejected of a batch of
pairs go through the model in *one* concatenated forward.

The LM head runs only from the first position that predicts a response token
(``logits_to_keep``): the batch's common prompt prefix never reaches the
vocabulary-sized output layer, which saves memory and time on long prompts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .sequences import EncodedPair, encode_pair


@dataclass
class SequenceLogps:
    """Per sequence, shape (n,): summed log-prob, mean per token, token count."""

    sum: torch.Tensor
    mean: torch.Tensor
    count: torch.Tensor

    def split(self, first: int) -> tuple[SequenceLogps, SequenceLogps]:
        return (
            SequenceLogps(self.sum[:first], self.mean[:first], self.count[:first]),
            SequenceLogps(self.sum[first:], self.mean[first:], self.count[first:]),
        )


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


def tail_logits(model, batch: PaddedBatch, keep: int) -> torch.Tensor:
    """Logits of the last ``keep`` positions only (the LM head skips the rest)."""
    inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "position_ids": batch.position_ids}
    try:
        return model(**inputs, logits_to_keep=keep).logits
    except TypeError:  # a model whose forward has no logits_to_keep
        return model(**inputs).logits[:, -keep:]


def token_logps(model, batch: PaddedBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of the response tokens: (flat log-probs of all scored tokens, row index of each).

    Works on a bare model and on one wrapped for data parallelism (DDP, FSDP): the
    forward goes through the wrapper so gradients synchronise.
    """
    # position t predicts token t+1: score positions whose *next* token is a response token
    predicts = torch.zeros_like(batch.response_mask)
    predicts[:, :-1] = batch.response_mask[:, 1:]
    targets = batch.input_ids[:, 1:][batch.response_mask[:, 1:]]
    rows = torch.nonzero(predicts, as_tuple=True)[0]
    first = int(predicts.float().argmax(-1).min())  # the earliest position any row scores
    keep = batch.input_ids.shape[1] - first
    logits = tail_logits(model, batch, keep)[predicts[:, first:]]
    return -F.cross_entropy(logits.float(), targets, reduction="none"), rows


def sequence_logps(model, batch: PaddedBatch) -> SequenceLogps:
    """Sum, mean and count of response-token log-probs per sequence (differentiable)."""
    logps, rows = token_logps(model, batch)
    n = batch.input_ids.shape[0]
    total = torch.zeros(n, dtype=logps.dtype, device=logps.device).index_add(0, rows, logps)
    count = batch.response_mask[:, 1:].sum(-1).to(logps.dtype)
    if bool((count == 0).any()):
        raise ValueError("a sequence has no response tokens to score (empty response after truncation?)")
    return SequenceLogps(total, total / count, count)


def pair_logps(
    model, chosen: Sequence[EncodedPair], rejected: Sequence[EncodedPair], pad_id: int, padding_side: str = "right"
) -> tuple[SequenceLogps, SequenceLogps]:
    """Chosen and rejected of a batch of pairs, in one concatenated forward."""
    device = next(model.parameters()).device
    batch = collate(list(chosen) + list(rejected), pad_id, padding_side).to(device)
    return sequence_logps(model, batch).split(len(chosen))


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices in batches of similar length (longest first), so little compute goes to padding."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


@torch.no_grad()
def score_sequences(
    model, sequences: Sequence[EncodedPair], pad_id: int, batch_size: int = 16, padding_side: str = "right"
) -> SequenceLogps:
    """Log-probs of many sequences without gradients, batched by length, returned in input order."""
    device = next(model.parameters()).device
    n = len(sequences)
    total, mean, count = (torch.zeros(n, dtype=torch.float32) for _ in range(3))
    for batch_indices in length_sorted_batches([len(s) for s in sequences], batch_size):
        logps = sequence_logps(model, collate([sequences[i] for i in batch_indices], pad_id, padding_side).to(device))
        index = torch.tensor(batch_indices)
        total[index], mean[index], count[index] = logps.sum.float().cpu(), logps.mean.float().cpu(), logps.count.float().cpu()
    return SequenceLogps(total, mean, count)


@torch.no_grad()
def score_records(
    model,
    tokenizer,
    records: Sequence[dict],
    batch_size: int = 8,
    max_length: int | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> list[dict[str, float | int]]:
    """Log-probs for each record: pairs (prompt/chosen/rejected) or completions (prompt/completion).

    Returns one dict per record, in input order: for pairs ``chosen_logp``,
    ``rejected_logp``, ``chosen_logp_mean``, ``rejected_logp_mean``,
    ``chosen_tokens``, ``rejected_tokens``; for completions ``completion_logp``,
    ``completion_logp_mean``, ``completion_tokens``. Records are batched by
    length; all sides of a batch's records go through one forward.
    ``on_batch(n)`` reports the number of records just scored.
    """
    encoded: list[dict[str, EncodedPair]] = []
    for record in records:
        names = ("chosen", "rejected") if "chosen" in record else ("completion",)
        encoded.append({name: encode_pair(tokenizer, record["prompt"], record[name], max_length) for name in names})
    results: list[dict[str, float | int]] = [{} for _ in records]
    device = next(model.parameters()).device
    padding_side = getattr(tokenizer, "padding_side", "right")
    sizes = [max(len(seq) for seq in sides.values()) for sides in encoded]
    for batch_indices in length_sorted_batches(sizes, batch_size):
        slots = [(index, name) for index in batch_indices for name in encoded[index]]
        batch = collate([encoded[i][name] for i, name in slots], tokenizer.pad_token_id, padding_side).to(device)
        logps = sequence_logps(model, batch)
        for row, (index, name) in enumerate(slots):
            results[index][f"{name}_logp"] = float(logps.sum[row])
            results[index][f"{name}_logp_mean"] = float(logps.mean[row])
            results[index][f"{name}_tokens"] = int(logps.count[row])
        if on_batch is not None:
            on_batch(len(batch_indices))
    return results
