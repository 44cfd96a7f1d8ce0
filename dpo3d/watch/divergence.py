"""Token-level dispersion: where a pair's chosen and rejected responses first differ.

Up to that position both responses share one context, so the policy's next-token distribution
there is one distribution, and p(chosen's token) + p(rejected's token) + p(every other token) = 1
exactly. Dispersion measured without any choice of candidate responses is the third share rising
while the first two fall (the paper's Cor. 3 at token level; PAPER.md, "Telling the properties
apart"). Each probability is scored as a one-token response after the shared prefix, through the
same scorer as every other log-prob (so the same precision, head and packing).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dpo3d.data.sequences import EncodedPair
from dpo3d.scoring.forward import LogprobOptions
from dpo3d.scoring.logprobs import score_sequences

PREFIX = "probe_divergence_"


def first_divergence(chosen: EncodedPair, rejected: EncodedPair) -> int | None:
    """The first response position whose token differs, or None where there is none to read:
    other prompts, identical responses, or one response a prefix of the other (the shorter has no
    token there; its end-of-sequence token, where the tokenizer adds one, already differs)."""
    if chosen.prompt_ids != rejected.prompt_ids:
        return None
    for position, (a, b) in enumerate(zip(chosen.response_ids, rejected.response_ids, strict=False)):  # the shorter ends it
        if a != b:
            return position
    return None


def _next_token(side: EncodedPair, position: int) -> EncodedPair:
    """The side's token at ``position`` as a one-token response after the shared context."""
    return EncodedPair(side.prompt_ids + side.response_ids[:position], [side.response_ids[position]])


def divergence_probabilities(
    model, chosen: Sequence[EncodedPair], rejected: Sequence[EncodedPair], pad_id: int, batch_size: int,
    options: LogprobOptions | None, padding_side: str = "right",
) -> dict[str, float]:
    """Mean over the pairs that diverge of p(chosen's token), p(rejected's token) and 1 − both at the
    first differing position, and how many pairs diverge; {} when none does."""
    found = [(c, r, k) for c, r in zip(chosen, rejected, strict=True) if (k := first_divergence(c, r)) is not None]
    if not found:
        return {}
    sequences = [_next_token(c, k) for c, _, k in found] + [_next_token(r, k) for _, r, k in found]
    logps = score_sequences(model, sequences, pad_id, batch_size, padding_side, options).sum.double()
    p_chosen, p_rejected = logps[: len(found)].exp(), logps[len(found):].exp()
    # the rest of the distribution; rounding can make it a hair below 0 when the two hold it all
    p_other = torch.clamp(1.0 - p_chosen - p_rejected, min=0.0)
    return {
        f"{PREFIX}pairs": len(found),
        f"{PREFIX}chosen_p": float(p_chosen.mean()),
        f"{PREFIX}rejected_p": float(p_rejected.mean()),
        f"{PREFIX}other_p": float(p_other.mean()),
    }
