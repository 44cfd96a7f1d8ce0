"""The probe measurements the detector reads, given only a model: no trainer, no loop.

A :class:`ProbeSet` is what is measured: some preference pairs (chosen and rejected), responses
in no pair (the pairs' ``unseen`` candidates) and the squeezing probes (the starting policy's own
greedy response and samples, :mod:`dpo3d.watch.probe_responses`). A :class:`ProbeScorer` scores
them with dpo3d's one scorer (:func:`dpo3d.scoring.logprobs.score_sequences`) and returns the flat record
the detector reads: for each group ``probe_<group>_logp`` (summed over the response, mean over the
group) and ``_logp_per_token``, their changes since the first measurement (``_delta``), the
policy's entropy on its own responses, the token-level split at each pair's first differing token
(:mod:`dpo3d.watch.divergence`) and, at the first measurement, the rounding noise of the scores.

train-dpo (``DPOTask``), the TRL callback (``dpo3d.integrations.trl``) and ``dpo3d diagnose --pairs`` all
measure through it: for the same weights, probe set and batch size they log the same numbers (other batch
sizes or precisions agree to rounding, which the step-0 noise floor measures).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from dpo3d.data.sequences import EncodedPair
from dpo3d.pairs.pair_set import PairSet, load_pairs
from dpo3d.scoring.forward import LogprobOptions
from dpo3d.scoring.heads import autocast_dtype
from dpo3d.scoring.logprobs import score_sequences

from .detector import NOISE_PER_TOKEN, NOISE_SUMMED
from .divergence import divergence_probabilities
from .probe_responses import ProbeResponseConfig


@dataclass(frozen=True)
class ProbeOptions:
    """What is probed outside train-dpo (the TRL callback, ``diagnose --pairs``): as train-dpo's --probe-size,
    --seed, --max-length and --unseen, and the starting model's greedy response as the squeezing probe."""

    probe_size: int = 16
    seed: int = 0
    max_length: int = 1024
    unseen: int = 64
    greedy_tokens: int = 128  # the starting model's greedy response per probe prompt; 0: none
    batch_size: int = 8

    @property
    def greedy(self) -> ProbeResponseConfig | None:
        """The squeezing probe's generation settings (None without one)."""
        if not self.greedy_tokens:
            return None
        return ProbeResponseConfig(greedy=True, samples=0, max_new_tokens=self.greedy_tokens, batch_size=self.batch_size)


@dataclass
class ProbeSet:
    """The responses measured at every probe: pairs (``chosen[i]`` against ``rejected[i]``), responses in
    no pair (``unseen``) and the squeezing probes by name (``greedy``, ``samples``)."""

    chosen: list[EncodedPair]
    rejected: list[EncodedPair]
    unseen: list[EncodedPair] = field(default_factory=list)
    responses: dict[str, list[EncodedPair]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.chosen) != len(self.rejected):
            raise ValueError(f"{len(self.chosen)} chosen against {len(self.rejected)} rejected probe responses")

    def groups(self) -> dict[str, list[EncodedPair]]:
        """Every non-empty group by its record name."""
        named = {"chosen": self.chosen, "rejected": self.rejected, "unseen": self.unseen, **self.responses}
        return {name: list(seqs) for name, seqs in named.items() if seqs}


def with_deltas(values: Mapping[str, float], baseline: Mapping[str, float]) -> dict[str, float]:
    """``values`` plus, for every log-prob field, its change since ``baseline`` (``probe_x_logp`` →
    ``probe_x_logp_delta``, ``probe_x_logp_per_token`` → ``probe_x_logp_per_token_delta``)."""
    out = dict(values)
    for key, value in values.items():
        if key.endswith("_logp") or key.endswith("_logp_per_token"):
            out[f"{key}_delta"] = value - baseline[key]
    return out


@dataclass
class ProbeScorer:
    """Scores a :class:`ProbeSet` under a model; ``baseline`` is the first measurement (set by the first
    :meth:`measure`, or given back on a resume) that every ``_delta`` is taken from."""

    probes: ProbeSet
    pad_id: int
    batch_size: int = 16
    padding_side: str = "right"
    options: LogprobOptions | None = None
    baseline: dict[str, float] | None = None

    def values(self, model, scored: dict | None = None) -> dict[str, float]:
        """The group means (no deltas); ``scored``, when given, receives each group's per-sequence scores."""
        values: dict[str, float] = {}
        for name, seqs in self.probes.groups().items():
            squeezing = name in self.probes.responses  # the policy's own responses: is its distribution narrowing?
            logps = score_sequences(model, seqs, self.pad_id, self.batch_size, self.padding_side, self.options,
                                    entropy=squeezing)
            if scored is not None:
                scored[name] = logps
            values[f"probe_{name}_logp"] = float(logps.sum.mean())
            values[f"probe_{name}_logp_per_token"] = float(logps.mean.mean())
            if squeezing:  # mean over the responses of the policy's per-token entropy along each (nats)
                values[f"probe_{name}_entropy"] = float(logps.entropy.mean())
        # token-level dispersion: the next-token distribution where each probe pair first differs
        values.update(divergence_probabilities(model, self.probes.chosen, self.probes.rejected, self.pad_id,
                                               self.batch_size, self.options, self.padding_side))
        return values

    def noise_floor(self, model, scored: Mapping) -> dict[str, float]:
        """The rounding noise of the pairs' scores: the larger of how far each response's score moves when it is
        scored alone instead of in its batch (same weights, same precision, other shapes) and the compute
        precision's unit roundoff times the largest score (float32: ~1e-5 nats on a sum of -170; bf16: ~0.3 on
        -76). The detector treats changes within a few times this as no change."""
        sequences = self.probes.chosen + self.probes.rejected
        alone = score_sequences(model, sequences, self.pad_id, 1, self.padding_side, self.options)
        batched = torch.cat([scored["chosen"].sum, scored["rejected"].sum])
        batched_mean = torch.cat([scored["chosen"].mean, scored["rejected"].mean])
        parameter = next(model.parameters())
        dtype = autocast_dtype(parameter.device.type) or parameter.dtype  # the matmuls' precision
        roundoff = torch.finfo(dtype).eps / 2
        return {NOISE_SUMMED: max(float((batched - alone.sum).abs().max()), roundoff * float(batched.abs().max())),
                NOISE_PER_TOKEN: max(float((batched_mean - alone.mean).abs().max()),
                                     roundoff * float(batched_mean.abs().max()))}

    def measure(self, model, step: int) -> dict[str, float]:
        """The probe record at ``step``: values, their changes since the baseline, and at step 0 the noise floor
        (measured before any update, read by the detector from the step-0 record)."""
        scored: dict = {}
        with torch.no_grad():
            values = self.values(model, scored)
            if step == 0 and self.probes.chosen:
                values.update(self.noise_floor(model, scored))
        if self.baseline is None:
            self.baseline = dict(values)
        return with_deltas(values, self.baseline)


def probe_prompts(chosen: Sequence[EncodedPair], indices: Sequence[int]) -> list[list[int]]:
    """The distinct prompts (token ids, first-seen order) of the pairs at ``indices``: the squeezing probes' prompts."""
    return [list(p) for p in dict.fromkeys(tuple(chosen[i].prompt_ids) for i in indices)]


def baseline_of(record: Mapping) -> dict[str, float]:
    """The probe values of a logged step-0 record (its deltas left out): what a resumed run takes changes from."""
    return {k: v for k, v in record.items() if k.startswith("probe_") and not k.endswith("_delta")}


def select(pairs, tokenizer, options: ProbeOptions) -> tuple[PairSet, list[int], list[list[int]]]:
    """The pairs of any source dpo3d reads, encoded; the probed ones (seeded); their distinct prompts."""
    data = load_pairs(pairs, tokenizer, options.max_length, options.unseen, options.seed, cache=None)
    indices = probe_indices(len(data), options.probe_size, options.seed)
    return data, indices, probe_prompts(data.chosen, indices)


def probe_sets(chosen: Sequence[EncodedPair], rejected: Sequence[EncodedPair], indices: Sequence[int],
               unseen: Sequence[EncodedPair] = (), responses: Mapping[str, list[EncodedPair]] | None = None) -> ProbeSet:
    """The probe set of the pairs at ``indices``, with the unseen candidates and squeezing probes given."""
    return ProbeSet([chosen[i] for i in indices], [rejected[i] for i in indices], list(unseen), dict(responses or {}))


def probe_indices(n: int, size: int, seed: int) -> list[int]:
    """A fixed, seeded subset of pairs whose log-probs are tracked at every logged step."""
    indices = list(range(n))
    random.Random(f"probe:{seed}").shuffle(indices)
    return sorted(indices[: min(size, n)])
