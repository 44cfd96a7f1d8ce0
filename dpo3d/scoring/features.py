"""Whether the chunked LM head and packed sequences reproduce the plain path on a given model.

Each feature is probed once per (unwrapped) model on two fixed sequences, against the padded
full-logits path, and the verdict kept; a feature that does not agree falls back with a warning.
``settle_support`` probes on every process at once and makes the verdicts agree, so sharded
models (FSDP, ZeRO-3) run the same collectives everywhere.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable

import torch

from dpo3d.data.sequences import EncodedPair
from dpo3d.models.wrappers import unwrap
from dpo3d.scoring.batches import PaddedBatch, collate
from dpo3d.scoring.forward import LogprobOptions, forward_token_stats
from dpo3d.scoring.heads import autocast_dtype, output_head

# per (unwrapped) model: does each feature reproduce the plain padded full-logits path? Probed at the
# first scoring call, or by settle_support (training loops, on every process at once).
_SUPPORT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
FEATURES = ("chunked", "packing")
PROBE_CHUNK = 3  # smaller than the probe's token count, so the probe crosses chunk boundaries
PROBE_TOKENS = 12


#: float32: the largest |feature − plain| a token's log-prob may show
FP32_TOLERANCE = 1e-3
#: bf16/fp16: the tolerance in unit roundoffs u of the log-prob (u·max(|log p|, 1) per token). Each path's
#: own rounding puts a token's log-prob ~2-3 u·|log p| off its float32 value (measured on SmolLM2-135M in
#: bf16: 2.2-2.6 u), so two correct paths differ by up to ~6 u (packed vs padded measured ≤ 4.5 u); a packing
#: that lets one sequence see another is 19-205 u off. 8 u lies between.
LOW_PRECISION_UNITS = 8


def _low_precision(model, device: torch.device) -> torch.dtype | None:
    """The half-precision dtype the model computes in (autocast, else its parameters), or None (float32)."""
    if autocast_dtype(device.type) in (torch.float16, torch.bfloat16):
        return autocast_dtype(device.type)
    return next((p.dtype for p in unwrap(model).parameters() if p.dtype in (torch.float16, torch.bfloat16)), None)


def agrees(got: torch.Tensor, plain: torch.Tensor, low_precision: torch.dtype | None) -> bool:
    """Whether a feature's token log-probs match the plain path's within the precision's rounding."""
    gap = (got.float() - plain.float()).abs()
    if low_precision is None:
        return bool(gap.max() <= FP32_TOLERANCE)
    unit = torch.finfo(low_precision).eps / 2  # bf16: 2^-8, fp16: 2^-11
    return bool((gap <= LOW_PRECISION_UNITS * unit * plain.float().abs().clamp(min=1.0)).all())


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
        plain = forward_token_stats(model, probe, chunk=None, packed=False).logps
        if feature == "chunked":
            got = forward_token_stats(model, probe, chunk=PROBE_CHUNK, packed=False).logps
        else:  # one row, so the second sequence follows the first
            got = forward_token_stats(model, probe, chunk=None, packed=True, width=None).logps
    finally:
        model.train(was_training)
    return agrees(got, plain, _low_precision(model, device))


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


def supports(model, feature: str, device: torch.device) -> bool:
    """Whether ``feature`` reproduces the plain path on ``model`` (probed once per model, then kept)."""
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
