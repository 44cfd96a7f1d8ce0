"""Sequence log-probs: batched, padded, response tokens only.

For each sequence: the sum of its response tokens' log-probs (``log π(y|x)``),
their mean per token, and the token count. Chosen and rejected of a batch of
pairs go through the model in *one* concatenated forward.

The LM head runs only from the first position that predicts a response token
(``logits_to_keep``): the batch's common prompt prefix never reaches the
vocabulary-sized output layer, which saves memory and time on long prompts. By
default (:class:`LogprobOptions`) the head also runs in chunks of positions with
the logits recomputed in backward (:mod:`dpo3d.scoring.heads`), and the sequences
are packed without padding (:mod:`dpo3d.scoring.packing`); batches and their scored
positions are :mod:`dpo3d.scoring.batches`, the forward on a path
:mod:`dpo3d.scoring.forward`, which paths a model supports :mod:`dpo3d.scoring.features`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from dpo3d.data.sequences import EncodedPair, encode_pair
from dpo3d.scoring.batches import (
    PaddedBatch,
    collate,
    length_sorted_batches,
    response_counts,
    sum_per_sequence,
    token_rows,
)
from dpo3d.scoring.features import supports
from dpo3d.scoring.forward import LogprobOptions, forward_token_stats
from dpo3d.scoring.heads import TokenStats


@dataclass
class SequenceLogps:
    """Per sequence, shape (n,): summed log-prob, mean per token, token count, and when asked the
    policy's mean per-token entropy over the response positions (nats, no gradient) and the sum of
    the last hidden states that predict the response tokens ((n, d), float32, no gradient: CHES's H)."""

    sum: torch.Tensor
    mean: torch.Tensor
    count: torch.Tensor
    entropy: torch.Tensor | None = None
    hidden_sum: torch.Tensor | None = None

    def split(self, first: int) -> tuple[SequenceLogps, SequenceLogps]:
        fields = (self.sum, self.mean, self.count, self.entropy, self.hidden_sum)
        return (SequenceLogps(*(None if f is None else f[:first] for f in fields)),
                SequenceLogps(*(None if f is None else f[first:] for f in fields)))


def token_stats(model, batch: PaddedBatch, options: LogprobOptions | None = None, temperature: float = 1.0,
                entropy: bool = False, log_sum_sq: bool = False, hidden: bool = False) -> TokenStats:
    """Per scored response token, flat in row-major order: log-probs at ``temperature`` and, without
    gradient when asked, the entropy, log Σ_v π(v)² and the last hidden state the head read. The one
    implementation of every scorer.

    Works on a bare model and on one wrapped for data parallelism (DDP, FSDP) or by peft: the
    forward goes through the wrapper so gradients synchronise.
    """
    options = options or LogprobOptions()
    device = batch.input_ids.device
    chunk = options.head_chunk if options.head_chunk and supports(model, "chunked", device) else None
    # nothing to gain on one sequence or a batch without padding
    padded = batch.input_ids.shape[0] > 1 and not bool(batch.attention_mask.bool().all())
    packed = options.packing and padded and supports(model, "packing", device)
    return forward_token_stats(model, batch, chunk=chunk, packed=packed, temperature=temperature, entropy=entropy,
                               log_sum_sq=log_sum_sq, hidden=hidden)


def sequence_logps(model, batch: PaddedBatch, options: LogprobOptions | None = None,
                   entropy: bool = False, hidden_sums: bool = False) -> SequenceLogps:
    """Sum, mean and count of response-token log-probs per sequence (differentiable); with ``entropy``
    also the mean per-token entropy of the policy over the response positions, with ``hidden_sums``
    the sum of the hidden states that predict the response tokens."""
    stats = token_stats(model, batch, options, entropy=entropy, hidden=hidden_sums)
    rows = token_rows(batch)
    total = sum_per_sequence(stats.logps, rows, len(batch.input_ids))
    count = response_counts(batch, stats.logps.dtype, check=not entropy)
    mean_entropy = sum_per_sequence(stats.entropy, rows, len(count)) / count.to(stats.entropy.dtype) if entropy else None
    hidden = sum_per_sequence(stats.hidden, rows, len(count)) if hidden_sums else None
    return SequenceLogps(total, total / count, count, mean_entropy, hidden)


@torch.no_grad()
def score_sequences(
    model, sequences: Sequence[EncodedPair], pad_id: int, batch_size: int = 16, padding_side: str = "right",
    options: LogprobOptions | None = None, entropy: bool = False,
) -> SequenceLogps:
    """Log-probs of many sequences without gradients, batched by length, returned in input order
    (with ``entropy``, also each sequence's mean per-token entropy)."""
    device = next(model.parameters()).device
    n = len(sequences)
    total, mean, count, ent = (torch.zeros(n, dtype=torch.float32) for _ in range(4))
    for batch_indices in length_sorted_batches([len(s) for s in sequences], batch_size):
        batch = collate([sequences[i] for i in batch_indices], pad_id, padding_side).to(device)
        logps = sequence_logps(model, batch, options, entropy)
        index = torch.tensor(batch_indices)
        total[index], mean[index], count[index] = logps.sum.float().cpu(), logps.mean.float().cpu(), logps.count.float().cpu()
        if entropy:
            ent[index] = logps.entropy.float().cpu()
    return SequenceLogps(total, mean, count, ent if entropy else None)


@torch.no_grad()
def scored_batches(
    model, tokenizer, records: Sequence[dict], batch_size: int = 8, max_length: int | None = None,
    options: LogprobOptions | None = None, hidden_sums: bool = False,
) -> Iterator[tuple[list[tuple[int, str]], SequenceLogps]]:
    """The records' sides (``chosen``/``rejected`` of a pair, ``completion`` of a completion), batched
    by length, all sides of a batch's records in one forward: per batch, the (record index, side) of
    each row and the rows' :class:`SequenceLogps` (with ``hidden_sums``, their hidden-state sums too)."""
    encoded: list[dict[str, EncodedPair]] = []
    for record in records:
        names = ("chosen", "rejected") if "chosen" in record else ("completion",)
        encoded.append({name: encode_pair(tokenizer, record["prompt"], record[name], max_length) for name in names})
    device = next(model.parameters()).device
    padding_side = getattr(tokenizer, "padding_side", "right")
    sizes = [max(len(seq) for seq in sides.values()) for sides in encoded]
    for batch_indices in length_sorted_batches(sizes, batch_size):
        slots = [(index, name) for index in batch_indices for name in encoded[index]]
        batch = collate([encoded[i][name] for i, name in slots], tokenizer.pad_token_id, padding_side).to(device)
        yield slots, sequence_logps(model, batch, options, hidden_sums=hidden_sums)


def logprob_fields(logps: SequenceLogps, row: int, name: str) -> dict[str, float | int]:
    """One side's fields in a scored record: ``{name}_logp``, ``{name}_logp_mean``, ``{name}_tokens``."""
    return {f"{name}_logp": float(logps.sum[row]), f"{name}_logp_mean": float(logps.mean[row]),
            f"{name}_tokens": int(logps.count[row])}


def score_records(
    model,
    tokenizer,
    records: Sequence[dict],
    batch_size: int = 8,
    max_length: int | None = None,
    on_batch: Callable[[int], None] | None = None,
    options: LogprobOptions | None = None,
) -> list[dict[str, float | int]]:
    """Log-probs for each record: pairs (prompt/chosen/rejected) or completions (prompt/completion).

    Returns one dict per record, in input order: for pairs ``chosen_logp``,
    ``rejected_logp``, ``chosen_logp_mean``, ``rejected_logp_mean``,
    ``chosen_tokens``, ``rejected_tokens``; for completions ``completion_logp``,
    ``completion_logp_mean``, ``completion_tokens``. Records are batched by
    length; all sides of a batch's records go through one forward.
    ``on_batch(n)`` reports the number of records just scored.
    """
    results: list[dict[str, float | int]] = [{} for _ in records]
    for slots, logps in scored_batches(model, tokenizer, records, batch_size, max_length, options):
        for row, (index, name) in enumerate(slots):
            results[index].update(logprob_fields(logps, row, name))
        if on_batch is not None:
            on_batch(len({index for index, _ in slots}))
    return results
