"""Sequence log-probs: batched, padded, response tokens only.

For each sequence: the sum of its response tokens' log-probs (``log π(y|x)``),
their mean per token, and the token count. Chosen and rejected of a batch of
pairs go through the model in *one* concatenated forward.

The LM head runs only from the first position that predicts a response token
(``logits_to_keep``): the batch's common prompt prefix never reaches the
vocabulary-sized output layer, which saves memory and time on long prompts. By
default (:class:`LogprobOptions`) the head also runs in chunks of positions with
the logits recomputed in backward (:mod:`dpo3d.scoring.heads`), and the sequences
are packed without padding (:mod:`dpo3d.scoring.packing`).
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from dpo3d.data.sequences import EncodedPair, encode_pair
from dpo3d.scoring import packing
from dpo3d.scoring.heads import (
    TokenStats,
    autocast_dtype,
    chunked_token_stats,
    logits_token_stats,
    output_head,
    unwrap,
)


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


@dataclass(frozen=True)
class LogprobOptions:
    """How response log-probs are computed (not what): the numbers agree either way, to rounding.

    ``head_chunk``: positions per pass through the LM head (:mod:`dpo3d.scoring.heads`; memory
    ``head_chunk x vocab`` instead of ``tokens x vocab``); None: the model's full logits.
    ``packing``: sequences packed into rows without padding (:mod:`dpo3d.scoring.packing`).
    Either falls back, with a warning, on a model where it does not reproduce the plain path.
    """

    head_chunk: int | None = 512  # as fast as 1024 on the bench, ~300 MiB less at its peak
    packing: bool = True

    def __post_init__(self):
        if self.head_chunk is not None and self.head_chunk < 1:
            raise ValueError(f"head_chunk must be a positive number of positions or None, not {self.head_chunk}")


def scored_positions(batch: PaddedBatch) -> torch.Tensor:
    """(n, T) bool: position t predicts token t+1, so t is scored when token t+1 is a response token."""
    predicts = torch.zeros_like(batch.response_mask)
    predicts[:, :-1] = batch.response_mask[:, 1:]
    return predicts


def _stats(model, batch: PaddedBatch, chunk: int | None, packed: bool, temperature: float, entropy: bool,
           log_sum_sq: bool, width: int | None | str = "auto", hidden: bool = False) -> TokenStats:
    scored = scored_positions(batch)
    layout = None
    if packed:
        lengths = batch.attention_mask.sum(-1).tolist()
        if width == "auto":
            width = packing.row_width(getattr(getattr(unwrap(model), "config", None), "_attn_implementation", None), lengths)
        layout = packing.pack(batch.input_ids, batch.attention_mask, scored, width)
        inputs, scored, ids = layout.inputs(), layout.scored, layout.input_ids
    else:
        inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "position_ids": batch.position_ids}
        ids = batch.input_ids
    targets = ids[:, 1:][scored[:, :-1]]
    if chunk:
        stats = chunked_token_stats(model, inputs, scored, targets, chunk, temperature, entropy, log_sum_sq, hidden)
    else:
        stats = logits_token_stats(model, inputs, scored, targets, temperature, entropy, log_sum_sq, hidden)
    return stats if layout is None else stats.select(layout.unpack)


# per (unwrapped) model: does each feature reproduce the plain padded full-logits path? Probed at the
# first scoring call, or by settle_support (training loops, on every process at once).
_SUPPORT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
FEATURES = ("chunked", "packing")
PROBE_CHUNK = 3  # smaller than the probe's token count, so the probe crosses chunk boundaries
PROBE_TOKENS = 12


def _low_precision(model, device: torch.device) -> bool:
    if autocast_dtype(device.type) in (torch.float16, torch.bfloat16):
        return True
    return any(p.dtype in (torch.float16, torch.bfloat16) for p in unwrap(model).parameters())


def _probe_batch(model, device: torch.device) -> PaddedBatch:
    """Two short sequences of fixed token ids, the second shorter (so the batch pads): the same on every
    process and for every dataset, so the probe's verdict and its number of forwards never depend on data."""
    vocabulary = getattr(getattr(unwrap(model), "config", None), "vocab_size", None) or 256
    tokens = [(7 * i + 3) % vocabulary for i in range(PROBE_TOKENS)]
    other = tokens[::-1][: PROBE_TOKENS // 2 + 1]
    return collate([EncodedPair(tokens[:1], tokens[1:]), EncodedPair(other[:1], other[1:])], tokens[0]).to(device)


@torch.no_grad()
def _probe(model, feature: str, device: torch.device) -> bool:
    """The feature vs the plain path on :func:`_probe_batch`, in eval mode (no dropout) so both see the
    same function: two forwards through the model as given (a wrapper's collectives included)."""
    probe = _probe_batch(model, device)
    was_training = model.training
    model.eval()
    try:
        plain = _stats(model, probe, None, False, 1.0, False, False).logps
        if feature == "chunked":
            got = _stats(model, probe, PROBE_CHUNK, False, 1.0, False, False).logps
        else:  # one row, so the second sequence follows the first
            got = _stats(model, probe, None, True, 1.0, False, False, width=None).logps
    finally:
        model.train(was_training)
    tolerance = 5e-2 if _low_precision(model, device) else 1e-3
    return bool((got.float() - plain.float()).abs().max() <= tolerance)


def _warn_unsupported(model, feature: str) -> None:
    what = "the chunked LM head" if feature == "chunked" else "packed sequences"
    warnings.warn(f"{type(unwrap(model)).__name__}: {what} did not reproduce the padded full-logits log-probs; "
                  "using the plain path for this model", stacklevel=5)


def _applies(model, feature: str) -> bool:
    # no chunking without a plain linear head (e.g. a LoRA-wrapped one: its own forward is the only one that knows it)
    return feature != "chunked" or output_head(model) is not None


def _keep(model, feature: str, verdict: bool, probed: bool = True) -> bool:
    _SUPPORT.setdefault(unwrap(model), {})[feature] = verdict
    if probed and not verdict:
        _warn_unsupported(model, feature)
    return verdict


def _supports(model, feature: str, device: torch.device) -> bool:
    if not _applies(model, feature):
        return False
    known = _SUPPORT.get(unwrap(model), {})
    return known[feature] if feature in known else _keep(model, feature, _probe(model, feature, device))


def settle_support(model, options: LogprobOptions | None = None, device: torch.device | None = None,
                   agree: Callable[[list[bool]], list[bool]] | None = None) -> dict[str, bool]:
    """Probe the features ``options`` asks for now, whatever is cached, and keep the verdicts.

    A lazy probe runs inside the first scoring call, which under sharded parameters (FSDP, ZeRO-3) is a
    set of collectives: a process that had probed earlier (say in an unsharded reference pass) and one
    that had not would run different numbers of forwards and wait on each other for ever. A training
    loop therefore calls this on every process at the same point, after wrapping the model: each runs
    the same forwards, and ``agree`` (per feature: supported on every process?) makes the verdicts one.
    Later scoring calls find them and run no probe."""
    options = options or LogprobOptions()
    device = device or next(unwrap(model).parameters()).device
    wanted = [f for f, on in zip(FEATURES, (bool(options.head_chunk), options.packing), strict=True) if on]
    applies = [_applies(model, feature) for feature in wanted]
    verdicts = [bool(a and _probe(model, feature, device)) for feature, a in zip(wanted, applies, strict=True)]
    agreed = [bool(v) for v in agree(verdicts)] if agree is not None else verdicts
    return {feature: _keep(model, feature, verdict, probed=a)
            for feature, a, verdict in zip(wanted, applies, agreed, strict=True)}


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
    chunk = options.head_chunk if options.head_chunk and _supports(model, "chunked", device) else None
    # nothing to gain on one sequence or a batch without padding
    padded = batch.input_ids.shape[0] > 1 and not bool(batch.attention_mask.bool().all())
    packed = options.packing and padded and _supports(model, "packing", device)
    return _stats(model, batch, chunk, packed, temperature, entropy, log_sum_sq, hidden=hidden)


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


def pair_logps(
    model, chosen: Sequence[EncodedPair], rejected: Sequence[EncodedPair], pad_id: int, padding_side: str = "right",
    options: LogprobOptions | None = None,
) -> tuple[SequenceLogps, SequenceLogps]:
    """Chosen and rejected of a batch of pairs, in one concatenated forward."""
    device = next(model.parameters()).device
    batch = collate(list(chosen) + list(rejected), pad_id, padding_side).to(device)
    return sequence_logps(model, batch, options).split(len(chosen))


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices in batches of similar length (longest first), so little compute goes to padding."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


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
